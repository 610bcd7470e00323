import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { rateLimitNames } from "../src/config.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";

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
async function scrape(url: string): Promise<Map<string, number>> {
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

    const m = await scrape(keygate.url);
    const login = 'service="keygate.v1.AuthService",method="Login"';
    expect(m.get(`keygate_rpc_calls_total{${login},code="ok"}`)).toBe(1);
    expect(m.get(`keygate_rpc_calls_total{${login},code="unauthenticated"}`)).toBe(1);
    expect(m.get(`keygate_rpc_calls_total{${login},code="resource_exhausted"}`)).toBe(1);
    expect(m.get(`keygate_rpc_duration_seconds_count{${login}}`)).toBe(3);
    expect(m.get('keygate_logins_total{outcome="success"}')).toBe(1);
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
      expect((await fetch(`${off.url}/metrics`)).status).toBe(404);
    } finally {
      await off.stop();
    }
  });
});
