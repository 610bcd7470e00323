import { type ChildProcess, fork } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";
import { createVerifier } from "../src/verify/index.js";
import {
  externalDatabaseEnv,
  freshDatabaseUrl,
  usingExternalPostgres,
} from "./support/database.js";
import { failure } from "./support/failure.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

// What an anonymous caller can hold open: streams per connection (HTTP/2 SETTINGS) and per
// client, connections per client, and for how long; and that the memory comes back.

/** A bound for a hung run, not a timing assertion. */
const waitLong = { timeout: 30_000, interval: 50 };
const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** Opens a Health/Watch stream and waits for its first answer; the stream stays open. */
async function openWatch(transport: Transport, headers: Record<string, string> = {}) {
  const abort = new AbortController();
  const stream = createClient(Health, transport).watch(
    { service: "" },
    { signal: abort.signal, headers },
  );
  const iterator = stream[Symbol.asyncIterator]();
  await iterator.next();
  // Keep reading so that the stream's flow-control window never fills.
  const rest = (async () => {
    try {
      for (;;) if ((await iterator.next()).done) return "ended";
    } catch (error) {
      return abort.signal.aborted ? "closed" : ConnectError.from(error);
    }
  })();
  return { close: () => abort.abort(), rest };
}

describe("SECURITY.md 36: streams and connections one client can hold", () => {
  let keygate: TestKeygate;
  const opened: { close(): void }[] = [];

  beforeAll(async () => {
    keygate = await startTestKeygate({
      KEYGATE_HTTP2_MAX_CONCURRENT_STREAMS: "20",
      KEYGATE_MAX_WATCH_STREAMS_PER_IP: "3",
      // X-Forwarded-For names the client, so one test can be several clients.
      KEYGATE_TRUSTED_PROXIES: "127.0.0.1",
    });
  });
  afterAll(async () => {
    for (const s of opened) s.close();
    await keygate?.stop();
  });

  it("advertises its concurrent-stream limit in the HTTP/2 SETTINGS of every connection", async () => {
    const session = http2.connect(keygate.url);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      // Node's own default would be 4294967295.
      expect(settings.maxConcurrentStreams).toBe(20);
    } finally {
      session.close();
    }
  });

  it("refuses a client's long-lived streams over its cap with RESOURCE_EXHAUSTED, on any connection", async () => {
    const client = { "x-forwarded-for": "203.0.113.20" };
    // Three streams of one client on three connections and two protocols.
    for (const transport of [
      createGrpcTransport({ baseUrl: keygate.url }),
      createGrpcTransport({ baseUrl: keygate.url }),
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
    ]) {
      opened.push(await openWatch(transport, client));
    }
    const { error: fourth } = await failure(
      openWatch(createGrpcTransport({ baseUrl: keygate.url }), client),
    );
    expect(fourth.code).toBe(Code.ResourceExhausted);
    expect(fourth.rawMessage).toMatch(/too many open streams/);

    // WatchRevocations counts against the same cap, before its admin key is even looked up.
    const feed = createClient(
      TokenIntrospectionService,
      createGrpcTransport({ baseUrl: keygate.url }),
    ).watchRevocations(
      { cursor: "" },
      { headers: { ...client, authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } },
    );
    const { error: revocations } = await failure(
      (async () => {
        for await (const _ of feed) break;
      })(),
    );
    expect(revocations.code).toBe(Code.ResourceExhausted);

    // Another client is not affected.
    opened.push(
      await openWatch(createGrpcTransport({ baseUrl: keygate.url }), {
        "x-forwarded-for": "203.0.113.21",
      }),
    );
    // Closing one stream makes room for one more.
    opened[0]?.close();
    await expect
      .poll(async () => {
        try {
          opened.push(await openWatch(createGrpcTransport({ baseUrl: keygate.url }), client));
          return "open";
        } catch (error) {
          return ConnectError.from(error).code;
        }
      }, waitLong)
      .toBe("open");
  });

  it("counts the addresses of one IPv6 /64 as one client", async () => {
    for (let i = 1; i <= 3; i++) {
      opened.push(
        await openWatch(createGrpcTransport({ baseUrl: keygate.url }), {
          "x-forwarded-for": `2001:db8:36::${i}`,
        }),
      );
    }
    const { error: refused } = await failure(
      openWatch(createGrpcTransport({ baseUrl: keygate.url }), {
        "x-forwarded-for": "2001:db8:36:0:ffff::1",
      }),
    );
    expect(refused.code).toBe(Code.ResourceExhausted);
  });
});

describe("SECURITY.md 36: connections per client", () => {
  let keygate: TestKeygate;

  beforeAll(async () => {
    keygate = await startTestKeygate({ KEYGATE_MAX_CONNECTIONS_PER_IP: "3" });
  });
  afterAll(async () => {
    await keygate?.stop();
  });

  it("answers a connection over the cap with RESOURCE_EXHAUSTED, in every protocol, until one closes", async () => {
    const held = await Promise.all(
      [1, 2, 3].map(async () => {
        const session = http2.connect(keygate.url);
        await new Promise((resolve) => session.once("remoteSettings", resolve));
        return session;
      }),
    );
    const check = async (transport: Transport) =>
      (await failure(createClient(Health, transport).check({ service: "" }))).error;
    for (const transport of [
      createGrpcTransport({ baseUrl: keygate.url }),
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "1.1" }),
    ]) {
      const refused = await check(transport);
      expect(refused.code).toBe(Code.ResourceExhausted);
      expect(refused.rawMessage).toMatch(/too many connections/);
    }
    held[0]?.close();
    await expect
      .poll(async () => {
        try {
          return (
            await createClient(Health, createGrpcTransport({ baseUrl: keygate.url })).check({})
          ).status;
        } catch (error) {
          return ConnectError.from(error).code;
        }
      }, waitLong)
      .toBe(1); // SERVING
    for (const s of held) s.close();
  });
});

describe("SECURITY.md 36: a stalled request or an idle connection is closed", () => {
  let keygate: TestKeygate;
  const receiveMs = 400;

  beforeAll(async () => {
    keygate = await startTestKeygate({
      KEYGATE_REQUEST_RECEIVE_TIMEOUT_MS: String(receiveMs),
      KEYGATE_IDLE_CONNECTION_TIMEOUT_MS: String(receiveMs),
    });
  });
  afterAll(async () => {
    await keygate?.stop();
  });

  /** Sends `first`, then `then` every 150 ms; answers how long until the server closed it. */
  const closedAfter = (first: string | Buffer, then?: string) =>
    new Promise<{ ms: number; answer: string }>((resolve) => {
      const { port } = new URL(keygate.url);
      const started = Date.now();
      let answer = "";
      const socket = net.connect(Number(port), "127.0.0.1", () => socket.write(first));
      const trickle = then ? setInterval(() => socket.write(then), 150) : undefined;
      socket.on("data", (chunk) => {
        answer += chunk.toString("latin1");
      });
      socket.on("error", () => {});
      socket.on("close", () => {
        clearInterval(trickle);
        resolve({ ms: Date.now() - started, answer });
      });
    });

  it("closes HTTP/1.1 connections whose request does not arrive in time, trickled or stalled", async () => {
    const stalled = await Promise.all([
      closedAfter("G"),
      closedAfter("GET /healthz HTTP/1.1\r\nHost: x\r\n"),
      closedAfter("GET /healthz HTTP/1.1\r\nHost: x\r\n", "X-A: b\r\n"),
      closedAfter(
        "POST /keygate.v1.AuthService/Login HTTP/1.1\r\nHost: x\r\n" +
          "content-type: application/json\r\ncontent-length: 100\r\n\r\n{",
      ),
    ]);
    for (const s of stalled) {
      expect(s.ms).toBeLessThan(receiveMs + 2_500);
      expect(s.answer === "" || s.answer.startsWith("HTTP/1.1 408")).toBe(true);
    }
  });

  it("closes HTTP/2 connections with no stream open, and resets a stream whose request stalls", async () => {
    const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
    expect((await closedAfter(preface)).ms).toBeLessThan(receiveMs + 2_500);

    const idle = http2.connect(keygate.url);
    idle.on("error", () => {});
    const idleStart = Date.now();
    await new Promise((resolve) => idle.once("close", resolve));
    expect(Date.now() - idleStart).toBeLessThan(receiveMs + 2_500);

    const session = http2.connect(keygate.url);
    session.on("error", () => {});
    const stream = session.request({
      ":method": "POST",
      ":path": "/keygate.v1.AuthService/Login",
      "content-type": "application/json",
    });
    stream.on("error", () => {});
    stream.write("{");
    const streamStart = Date.now();
    await new Promise((resolve) => stream.once("close", resolve));
    expect(Date.now() - streamStart).toBeLessThan(receiveMs + 2_500);
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    session.close();
  });

  it("keeps a quiet watch stream, and its connection, open past both timeouts", async () => {
    const watch = await openWatch(createGrpcTransport({ baseUrl: keygate.url }));
    const outcome = await Promise.race([
      watch.rest,
      new Promise((resolve) => setTimeout(() => resolve("open"), receiveMs * 4)),
    ]);
    watch.close();
    expect(outcome).toBe("open");
    // And a call made after all that still works.
    const health = createClient(Health, createGrpcTransport({ baseUrl: keygate.url }));
    expect((await health.check({ service: "" })).status).toBe(1);
  });
});

describe("SECURITY.md 36: watch streams have a maximum age", () => {
  let keygate: TestKeygate;

  beforeAll(async () => {
    keygate = await startTestKeygate({
      KEYGATE_WATCH_MAX_AGE_MS: "600",
      ...(usingExternalPostgres ? {} : { KEYGATE_REVOCATION_RESYNC_MS: "200" }),
    });
  });
  afterAll(async () => {
    await keygate?.stop();
  });

  it("ends a Health/Watch stream with OK at its age", async () => {
    const watch = await openWatch(createGrpcTransport({ baseUrl: keygate.url }));
    expect(await watch.rest).toBe("ended");
  });

  it("ends WatchRevocations at its age, and keygate/verify resumes by cursor and keeps up", async () => {
    const root = as(keygate.bootstrapped?.adminKey as string);
    const workspaceId = keygate.bootstrapped?.workspaceId as string;
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const auth = createClient(AuthService, transport);
    const { secret } = await admin.createAdminKey(
      { name: "verifier", role: AdminKeyRole.READ_ONLY, introspect: true },
      root,
    );
    const verifier = createVerifier({
      baseUrl: keygate.url,
      adminKey: secret,
      audience: keygate.config.audience,
      issuer: keygate.config.issuer,
    });
    try {
      await verifier.ready();
      const email = `age-${Date.now()}@example.test`;
      const password = "correct horse battery staple";
      await admin.provisionUser({ email, password, workspaceId, role: Role.MEMBER }, root);
      const login = await auth.login({ email, password, workspaceId });
      if (login.result.case !== "tokens") throw new Error("no tokens");
      const token = login.result.value.accessToken;
      // The verifier has been through several streams, each ended by the server...
      await expect.poll(() => verifier.calls.watch, waitLong).toBeGreaterThanOrEqual(3);
      expect((await verifier.verify(token)).userId).toBeTruthy();
      // ...and still hears a revocation made on a later one.
      await auth.logout({}, as(token));
      await expect
        .poll(
          () =>
            verifier.verify(token).then(
              () => "accepted",
              (e: { reason?: string }) => e.reason,
            ),
          waitLong,
        )
        .toBe("revoked");
      expect(verifier.current).toBe(true);
    } finally {
      await verifier.close();
    }
  });
});

/** Keygate in a child process with --expose-gc (test/fixtures/stream-memory-server.ts). */
async function startMeasuredServer(env: Record<string, string>) {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-streams-"));
  const db = await freshDatabaseUrl();
  const child: ChildProcess = fork(
    path.resolve(import.meta.dirname, "fixtures/stream-memory-server.ts"),
    {
      execArgv: ["--expose-gc", "--import", "tsx"],
      env: {
        PATH: process.env.PATH ?? "",
        KEYGATE_PORT: "0",
        KEYGATE_METRICS_PORT: "0",
        KEYGATE_DATA_DIR: dataDir,
        KEYGATE_LOG_LEVEL: "silent",
        KEYGATE_MIGRATE_ON_START: "true",
        ...externalDatabaseEnv(db.url),
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit", "ipc"],
    },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n")[0];
      if (out.includes("\n") && line) resolve(JSON.parse(line).url);
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  return {
    url,
    /** The server's heap and resident set after a full collection. */
    measure: () =>
      new Promise<{ heapUsed: number; rss: number }>((resolve) => {
        child.once("message", (m) => resolve(m as { heapUsed: number; rss: number }));
        child.send("measure");
      }),
    async stop() {
      if (child.connected) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.disconnect();
        await exited;
      }
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Tries to open `count` Health/Watch streams over `connections` HTTP/2 connections. */
async function tryStreams(url: string, count: number, connections: number) {
  const transports = Array.from({ length: connections }, () =>
    createGrpcTransport({ baseUrl: url }),
  );
  const open: Awaited<ReturnType<typeof openWatch>>[] = [];
  const refused: Code[] = [];
  for (let i = 0; i < count; i += 100) {
    const batch = await Promise.allSettled(
      Array.from({ length: Math.min(100, count - i) }, (_, j) =>
        openWatch(transports[(i + j) % connections] as Transport),
      ),
    );
    for (const r of batch) {
      if (r.status === "fulfilled") open.push(r.value);
      else refused.push(ConnectError.from(r.reason).code);
    }
  }
  return { open, refused };
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

describe("SECURITY.md 36: memory comes back when streams end", () => {
  let server: Awaited<ReturnType<typeof startMeasuredServer>>;
  beforeAll(async () => {
    // Caps raised, so that one client can hold thousands of streams.
    server = await startMeasuredServer({
      KEYGATE_HTTP2_MAX_CONCURRENT_STREAMS: "1000",
      KEYGATE_MAX_WATCH_STREAMS_PER_IP: "100000",
    });
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });

  it("after 4,000 Watch streams on 8 connections have closed, the heap is back near where it was", {
    timeout: 180_000,
  }, async () => {
    // Warm up, so that code loaded and caches filled on first use count in the baseline.
    for (const s of (await tryStreams(server.url, 200, 8)).open) s.close();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = await server.measure();
    const { open: streams, refused } = await tryStreams(server.url, 4000, 8);
    expect(refused).toEqual([]);
    const held = await server.measure();
    for (const s of streams) s.close();
    await Promise.all(streams.map((s) => s.rest));
    // The server notices the resets on its own schedule: sample until it has (bounded).
    let after = await server.measure();
    for (let i = 0; i < 40 && after.heapUsed > before.heapUsed + 8e6; i++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      after = await server.measure();
    }
    console.info(
      `heap: ${mb(before.heapUsed)} before, ${mb(held.heapUsed)} with 4,000 streams, ${mb(after.heapUsed)} after; rss ${mb(before.rss)} → ${mb(held.rss)} → ${mb(after.rss)}`,
    );
    // The streams held real memory (so the measurement can see it)...
    expect(held.heapUsed - before.heapUsed).toBeGreaterThan(20e6);
    // ...and it is released when they end.
    expect(after.heapUsed).toBeLessThan(before.heapUsed + 8e6);
  });
});

describe("SECURITY.md 36: with the default caps, one client's streams cannot grow the heap", () => {
  let server: Awaited<ReturnType<typeof startMeasuredServer>>;
  beforeAll(async () => {
    server = await startMeasuredServer({});
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });

  it("of 4,000 Watch streams on 8 connections, all but 64 are refused and the heap stays put", {
    timeout: 180_000,
  }, async () => {
    for (const s of (await tryStreams(server.url, 100, 8)).open) s.close();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = await server.measure();
    const { open, refused } = await tryStreams(server.url, 4000, 8);
    const held = await server.measure();
    console.info(
      `default caps: ${open.length} open, ${refused.length} refused; heap ${mb(before.heapUsed)} → ${mb(held.heapUsed)}`,
    );
    for (const s of open) s.close();
    expect(open).toHaveLength(64);
    expect(new Set(refused)).toEqual(new Set([Code.ResourceExhausted]));
    // 4,000 open streams took about 170 MB; 64 take about 3.
    expect(held.heapUsed - before.heapUsed).toBeLessThan(15e6);
  });
});
