import net from "node:net";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OtpLoginMode } from "../gen/keygate/v1/types_pb.js";
import { configFromEnv, rateLimitNames } from "../src/config.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";
import { freePort } from "./support/wait.js";

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({
    KEYGATE_SMTP_URL: smtp.url,
    // Logins per account: two, so that the third is refused.
    KEYGATE_RATE_LIMITS: JSON.stringify({
      ...Object.fromEntries(rateLimitNames.map((n) => [n, { limit: 100_000, window_seconds: 60 }])),
      login_account: { limit: 2, window_seconds: 60 },
    }),
  });
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

/** The samples of a Prometheus text exposition, as "name{labels}" -> value. */
async function scrape(url: string | undefined): Promise<Map<string, number>> {
  if (!url) throw new Error("no metrics listener");
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

describe("GET /metrics", () => {
  it("counts calls, login outcomes and refusals, and reads the instance's gauges", async () => {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const auth = createClient(AuthService, transport);
    const admin = createClient(AdminService, transport);
    const workspaceId = keygate.bootstrapped?.workspaceId as string;
    const email = `metrics-${Date.now()}@example.test`;
    const password = "correct horse battery staple";
    await admin.provisionUser(
      { email, password, workspaceId },
      { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } },
    );
    await auth.login({ email, password, workspaceId });
    await auth.login({ email, password: "wrong password", workspaceId }).catch(() => {});
    await auth.login({ email, password, workspaceId }).catch(() => {});

    // A login that answers a pending second step (an emailed code) counts as second_step.
    const key = { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } };
    const stepped = await admin.createWorkspace(
      {
        name: "Metrics second step",
        slug: `metrics-step-${Date.now()}`,
        settings: { otpLogin: OtpLoginMode.REQUIRED },
      },
      key,
    );
    const steppedId = stepped.workspace?.id as string;
    const other = `metrics-step-${Date.now()}@example.test`;
    await admin.provisionUser(
      { email: other, password, workspaceId: steppedId, emailVerified: true },
      key,
    );
    const pending = await auth.login({ email: other, password, workspaceId: steppedId });
    expect(pending.result.case).toBe("pendingLogin");

    const m = await scrape(keygate.metricsUrl);
    const login = 'service="keygate.v1.AuthService",method="Login"';
    expect(m.get(`keygate_rpc_calls_total{${login},code="ok"}`)).toBe(2);
    expect(m.get(`keygate_rpc_calls_total{${login},code="unauthenticated"}`)).toBe(1);
    expect(m.get(`keygate_rpc_calls_total{${login},code="resource_exhausted"}`)).toBe(1);
    expect(m.get(`keygate_rpc_duration_seconds_count{${login}}`)).toBe(4);
    expect(m.get('keygate_logins_total{outcome="success"}')).toBe(1);
    expect(m.get('keygate_logins_total{outcome="second_step"}')).toBe(1);
    expect(m.get('keygate_logins_total{outcome="invalid_credentials"}')).toBe(1);
    expect(m.get('keygate_logins_total{outcome="rate_limited"}')).toBe(1);
    expect(m.get('keygate_rate_limit_refusals_total{reason="RATE_LIMITED",method="Login"}')).toBe(
      1,
    );
    expect(m.get("keygate_revocations_trusted")).toBe(1);
    expect(m.get("keygate_outbox_depth")).toBeGreaterThanOrEqual(0);
    expect(m.get("keygate_password_hash_queue_length")).toBe(0);
    expect(m.get('keygate_password_hash_wait_seconds{quantile="0.99"}')).toBeGreaterThanOrEqual(0);
    expect(m.get('keygate_db_pool_connections{state="idle"}')).toBeGreaterThanOrEqual(0);
    expect(m.get("nodejs_eventloop_lag_p99_seconds")).toBeGreaterThan(0);
  });

  it("is absent when turned off", async () => {
    const off = await startTestKeygate({ KEYGATE_METRICS: "false" });
    try {
      expect(off.metricsUrl).toBeUndefined();
      expect((await fetch(`${off.url}/metrics`)).status).toBe(404);
    } finally {
      await off.stop();
    }
  });
});

/** Whether a TCP connection to the port is accepted. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("SECURITY.md 35: metrics are off the public port", () => {
  it("answers 404 for /metrics on the service port, over HTTP/1.1 and HTTP/2", async () => {
    expect((await fetch(`${keygate.url}/metrics`)).status).toBe(404);
    expect((await fetch(`${keygate.url}/metrics`, { method: "HEAD" })).status).toBe(404);
    // RequestMagicLink for a known address bumps keygate_outbox_sent_total; none of it shows here.
    const { connect } = await import("node:http2");
    const session = connect(keygate.url);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ":path": "/metrics" });
        stream.once("response", (headers) => resolve(Number(headers[":status"])));
        stream.once("error", reject);
        stream.resume();
      });
      expect(status).toBe(404);
    } finally {
      session.close();
    }
  });

  it("serves them on a listener of their own, on loopback unless told otherwise", async () => {
    expect(configFromEnv({}).metricsHost).toBe("127.0.0.1");
    expect(configFromEnv({}).metricsPort).toBe(9464);
    const metricsUrl = new URL(keygate.metricsUrl ?? "");
    expect(metricsUrl.hostname).toBe("127.0.0.1");
    expect(metricsUrl.port).not.toBe(new URL(keygate.url).port);
    // The metrics listener serves nothing else.
    expect((await fetch(`${keygate.metricsUrl}/healthz`)).status).toBe(404);
    expect((await fetch(`${keygate.metricsUrl}/metrics`, { method: "POST" })).status).toBe(405);
  });

  it("refuses a metrics port equal to the service port", () => {
    expect(() => configFromEnv({ KEYGATE_PORT: "9000", KEYGATE_METRICS_PORT: "9000" })).toThrow(
      /KEYGATE_METRICS_PORT: must differ from KEYGATE_PORT/,
    );
  });

  it("closes the metrics listener on shutdown", async () => {
    const port = await freePort();
    const instance = await startTestKeygate({ KEYGATE_METRICS_PORT: String(port) });
    expect(instance.metricsUrl).toBe(`http://127.0.0.1:${port}`);
    expect(await accepts(port)).toBe(true);
    await instance.stop();
    expect(await accepts(port)).toBe(false);
  });

  it("leaves neither listener open when the start fails", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const takenPort = (taken.address() as net.AddressInfo).port;
    try {
      // The service port is taken: the metrics port must not stay bound.
      const metricsPort = await freePort();
      await expect(
        startTestKeygate({
          KEYGATE_PORT: String(takenPort),
          KEYGATE_METRICS_PORT: String(metricsPort),
        }),
      ).rejects.toThrow(/^service port 127\.0\.0\.1:\d+ is in use/);
      expect(await accepts(metricsPort)).toBe(false);
      // The metrics port is taken: the service port must not stay bound.
      const servicePort = await freePort();
      await expect(
        startTestKeygate({
          KEYGATE_PORT: String(servicePort),
          KEYGATE_METRICS_PORT: String(takenPort),
        }),
      ).rejects.toThrow(/^metrics port 127\.0\.0\.1:\d+ is in use/);
      expect(await accepts(servicePort)).toBe(false);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
