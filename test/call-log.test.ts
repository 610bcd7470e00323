import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { createLogger, logDestination } from "../src/log.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

type Line = Record<string, unknown>;
const lines: Line[] = [];
let keygate: TestKeygate;
let stopped = false;

const introspectMethod = "keygate.v1.TokenIntrospectionService/Introspect";

beforeAll(async () => {
  keygate = await startTestKeygate(
    // One successful hot-path call in a thousand is logged: the first of each method.
    { KEYGATE_LOG_SAMPLE_EVERY: "1000" },
    { logTo: { write: (line: string) => void lines.push(JSON.parse(line) as Line) } },
  );
});
afterAll(async () => {
  if (!stopped) await keygate?.stop();
});

/** The samples of a Prometheus text exposition, as "name{labels}" -> value. */
async function scrape(): Promise<Map<string, number>> {
  const res = await fetch(`${keygate.metricsUrl}/metrics`);
  expect(res.status).toBe(200);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

describe("the call log", () => {
  it("samples successful hot-path calls, counts the rest in metrics, and logs every error", async () => {
    const rootKey = keygate.bootstrapped?.adminKey as string;
    const workspaceId = keygate.bootstrapped?.workspaceId as string;
    const root = { headers: { authorization: `Bearer ${rootKey}` } };
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const auth = createClient(AuthService, transport);
    const tokens = createClient(TokenIntrospectionService, transport);
    const email = `call-log-${Date.now()}@example.test`;
    const password = "correct horse battery staple";
    await admin.provisionUser({ email, password, workspaceId }, root);
    const login = await auth.login({ email, password, workspaceId });
    if (login.result.case !== "tokens") throw new Error("no tokens");
    const token = login.result.value.accessToken;

    for (let i = 0; i < 5; i++) {
      expect((await tokens.introspect({ token }, root)).active).toBe(true);
    }
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${keygate.url}/oauth2/introspect`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${rootKey}`,
          "content-type": "application/x-www-form-urlencoded",
        },
        body: new URLSearchParams({ token }).toString(),
      });
      expect(res.status).toBe(200);
    }
    // Failures of the same hot-path method: every one is logged.
    for (const id of ["call-log-denied-1", "call-log-denied-2"]) {
      const denied = await tokens
        .introspect(
          { token },
          { headers: { authorization: "Bearer kg_wrong_key", "x-request-id": id } },
        )
        .catch((e: unknown) => e);
      expect(ConnectError.from(denied).code).toBe(Code.Unauthenticated);
    }
    // A call off the hot path: every successful one is logged.
    await admin.listWorkspaces({}, root);
    await admin.listWorkspaces({}, root);

    const calls = (method: string, code?: string) =>
      lines.filter((l) => l.msg === "call" && l.method === method && (!code || l.code === code));
    expect(calls(introspectMethod, "ok")).toHaveLength(1);
    expect(calls("POST /oauth2/introspect", "ok")).toHaveLength(1);
    expect(calls(introspectMethod, "unauthenticated")).toEqual([
      expect.objectContaining({ level: "warn", requestId: "call-log-denied-1" }),
      expect.objectContaining({ level: "warn", requestId: "call-log-denied-2" }),
    ]);
    expect(calls("keygate.v1.AdminService/ListWorkspaces", "ok")).toHaveLength(2);

    const samples = await scrape();
    expect(samples.get(`keygate_calls_unlogged_total{method="${introspectMethod}"}`)).toBe(4);
    expect(samples.get('keygate_calls_unlogged_total{method="POST /oauth2/introspect"}')).toBe(2);
    expect(
      samples.get(
        'keygate_rpc_calls_total{service="keygate.v1.TokenIntrospectionService",method="Introspect",code="ok"}',
      ),
    ).toBe(5);

    // What was left out is summed up in the log, at the latest when the server stops.
    await keygate.stop();
    stopped = true;
    const summaries = lines.filter((l) => l.msg === "calls not logged");
    const counted: Record<string, number> = {};
    for (const s of summaries) {
      for (const [m, n] of Object.entries(s.counts as Record<string, number>)) {
        counted[m] = (counted[m] ?? 0) + n;
      }
    }
    expect(counted).toMatchObject({ [introspectMethod]: 4, "POST /oauth2/introspect": 2 });
  });
});

describe("createLogger", () => {
  it("censors secrets that reach a line through a logged object, and keeps the rest", () => {
    const written: string[] = [];
    const logger = createLogger("info", { write: (l: string) => void written.push(l) });
    logger.info({ password: "hunter2-secret", token: "tok-secret", method: "m", code: "ok" }, "a");
    logger.info(
      {
        headers: { authorization: "Bearer hdr-secret", cookie: "sid=cookie-secret", accept: "x" },
        request: { accessToken: "at-secret", code: "123456", email: "a@example.test" },
        user: { refreshToken: "rt-secret", headers: { authorization: "Bearer nested-secret" } },
      },
      "b",
    );
    logger.error({ err: new Error("boom") }, "c");
    const text = written.join("");
    for (const secret of [
      "hunter2-secret",
      "tok-secret",
      "hdr-secret",
      "cookie-secret",
      "at-secret",
      "123456",
      "rt-secret",
      "nested-secret",
    ]) {
      expect(text).not.toContain(secret);
    }
    const [a, b, c] = written.map((l) => JSON.parse(l) as Line);
    expect(a).toMatchObject({ method: "m", code: "ok", password: "[redacted]", level: "info" });
    expect(b).toMatchObject({
      headers: { accept: "x", authorization: "[redacted]" },
      request: { email: "a@example.test" },
    });
    expect(c?.err).toMatchObject({
      type: "Error",
      message: "boom",
      stack: expect.stringContaining("boom"),
    });
  });

  it("writes every line through the asynchronous destination, none lost to the batching", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "keygate-log-"));
    try {
      const file = path.join(dir, "log.ndjson");
      const destination = logDestination(file);
      const logger = createLogger("info", destination);
      for (let i = 0; i < 20_000; i++) logger.info({ i }, "line");
      // Ending the destination writes out what is still buffered, as exiting does.
      await new Promise<void>((resolve) => {
        destination.once("close", () => resolve());
        destination.end();
      });
      const written = (await readFile(file, "utf8")).trimEnd().split("\n");
      expect(written).toHaveLength(20_000);
      expect(JSON.parse(written.at(-1) as string)).toMatchObject({ i: 19_999, msg: "line" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
