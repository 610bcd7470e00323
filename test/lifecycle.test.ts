import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

describe("TLS with ALPN", () => {
  let keygate: TestKeygate;
  let certDir: string;
  let cert: Buffer;

  beforeAll(async () => {
    certDir = await mkdtemp(path.join(tmpdir(), "keygate-tls-"));
    const certFile = path.join(certDir, "cert.pem");
    const keyFile = path.join(certDir, "key.pem");
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        keyFile,
        "-out",
        certFile,
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    cert = execFileSync("cat", [certFile]);
    keygate = await startTestKeygate({
      KEYGATE_TLS_CERT_FILE: certFile,
      KEYGATE_TLS_KEY_FILE: keyFile,
    });
  });
  afterAll(async () => {
    await keygate?.stop();
    await rm(certDir, { recursive: true, force: true });
  });

  it("serves gRPC over h2 to a stock grpc-js client", async () => {
    expect(keygate.url.startsWith("https://")).toBe(true);
    const definition = protoLoader.loadSync("grpc/health/v1/health.proto", {
      includeDirs: [path.resolve(import.meta.dirname, "../proto")],
      enums: String,
    });
    // biome-ignore lint/suspicious/noExplicitAny: proto-loader builds the client classes at run time.
    const loaded = grpc.loadPackageDefinition(definition) as any;
    const client = new loaded.grpc.health.v1.Health(
      new URL(keygate.url).host,
      grpc.credentials.createSsl(cert),
    );
    const res = await new Promise<{ status: string }>((resolve, reject) =>
      client.Check({}, (err: Error | null, r: { status: string }) =>
        err ? reject(err) : resolve(r),
      ),
    );
    client.close();
    expect(res.status).toBe("SERVING");
  });

  it("serves Connect over HTTP/1.1 to clients that do not offer h2", async () => {
    const health = createClient(
      Health,
      createConnectTransport({
        baseUrl: keygate.url,
        httpVersion: "1.1",
        nodeOptions: { ca: cert },
      }),
    );
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("graceful shutdown", () => {
  it("turns not ready, ends watches, refuses new calls and closes well before the deadline", async () => {
    const keygate = await startTestKeygate({ KEYGATE_SHUTDOWN_TIMEOUT_MS: "8000" });
    const transport = createGrpcTransport({ baseUrl: keygate.url });
    const health = createClient(Health, transport);
    const statuses: HealthCheckResponse_ServingStatus[] = [];
    const watching = (async () => {
      for await (const res of health.watch({})) statuses.push(res.status);
    })();
    while (statuses.length === 0) await new Promise((r) => setTimeout(r, 20));

    const started = Date.now();
    const closing = keygate.stop();
    await watching;
    await closing;
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(statuses).toEqual([
      HealthCheckResponse_ServingStatus.SERVING,
      HealthCheckResponse_ServingStatus.NOT_SERVING,
    ]);

    const error = await health.check({}).catch((e) => e);
    expect(ConnectError.from(error).code).toBe(Code.Unavailable);
  });
});

describe("a failed start", () => {
  it("leaves no worker thread, timer or connection behind, wherever it fails", async () => {
    // Linux lists every thread of the process, worker threads included, in /proc/self/task.
    const threads = () => readdirSync("/proc/self/task").length;
    const resources = () => {
      const counts = new Map<string, number>();
      for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1);
      return counts;
    };
    const settle = () => new Promise((resolve) => setTimeout(resolve, 300));
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const failures = [
      // Early: the database, the revocation feed and the hash workers are up, the mail
      // templates cannot be read.
      () =>
        startTestKeygate({
          KEYGATE_HASH_WORKERS: "3",
          KEYGATE_MAIL_TEMPLATES_DIR: path.join(tmpdir(), "keygate-no-such-templates"),
        }),
      // Late: everything is running but the service port is taken.
      () =>
        startTestKeygate({
          KEYGATE_HASH_WORKERS: "3",
          KEYGATE_PORT: String((taken.address() as net.AddressInfo).port),
        }),
    ];
    // The first round warms what stays for the process's life (libuv's pool, module state).
    for (const fail of failures) await expect(fail()).rejects.toThrow();
    await settle();
    const before = { threads: threads(), resources: resources() };
    for (let i = 0; i < 2; i++) for (const fail of failures) await expect(fail()).rejects.toThrow();
    await settle();
    await new Promise((resolve) => taken.close(resolve));
    expect(threads()).toBeLessThanOrEqual(before.threads);
    for (const [kind, n] of resources()) {
      expect({ kind, n }).toEqual({ kind, n: Math.min(n, before.resources.get(kind) ?? 0) });
    }
  }, 120_000 /* six starts, each making its first RSA keys: a bound for a hung run */);
});
