import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { ConfigError } from "../src/config.js";
import { loadSecrets } from "../src/crypto/secrets.js";
import { usingExternalPostgres } from "./support/database.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";
import { freePort } from "./support/wait.js";

/**
 * Three instances on one database, as a deployment runs them: the outbox is delivered
 * exactly once among them, an instance killed with SIGKILL while sending loses no mail, and a
 * revocation through one is honoured by the others.
 */
const root = path.resolve(import.meta.dirname, "..");
const password = "correct horse battery staple";
const instanceEnv: Record<string, string> = {
  // The embedded database has no notifications across connections: resync often there.
  ...(usingExternalPostgres ? {} : { KEYGATE_REVOCATION_RESYNC_MS: "200" }),
  KEYGATE_MAIL_LEASE_MS: "3000",
};

let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let a: TestKeygate;
let b: TestKeygate;
let c: TestKeygate;
let counter = 0;

beforeAll(async () => {
  // Each message is held 150 ms before the server accepts it, so sends overlap.
  smtp = await startSmtpServer({ acceptDelayMs: 150 });
  a = await startTestKeygate({ KEYGATE_SMTP_URL: smtp.url, ...instanceEnv });
  b = await startPeerKeygate(a, instanceEnv);
  c = await startPeerKeygate(a, instanceEnv);
});
afterAll(async () => {
  for (const k of [c, b, a]) await k?.stop();
  await smtp?.stop();
});

const clients = (k: TestKeygate) => {
  const transport = createConnectTransport({ baseUrl: k.url, httpVersion: "2" });
  return {
    auth: createClient(AuthService, transport),
    admin: createClient(AdminService, transport),
    introspection: createClient(TokenIntrospectionService, transport),
  };
};
const asRoot = () => ({ headers: { authorization: `Bearer ${a.bootstrapped?.adminKey}` } });

async function users(n: number, tag: string) {
  const { admin } = clients(a);
  const workspaceId = a.bootstrapped?.workspaceId as string;
  const emails = Array.from({ length: n }, () => `${tag}-${Date.now()}-${++counter}@example.test`);
  for (const email of emails) await admin.provisionUser({ email, password, workspaceId }, asRoot());
  return { emails, workspaceId };
}

/** Waits until every address got mail, then a little longer for duplicates to show. */
async function deliveries(emails: readonly string[], timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  const countFor = (e: string) => smtp.received.filter((m) => m.to.includes(e)).length;
  while (emails.some((e) => countFor(e) === 0)) {
    if (Date.now() > deadline) {
      throw new Error(`undelivered: ${emails.filter((e) => countFor(e) === 0).join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 1_000));
  return emails.map(countFor);
}

describe("three instances on one database", () => {
  it("deliver every outbox mail exactly once", async () => {
    const { emails, workspaceId } = await users(24, "once");
    const instances = [a, b, c].map(clients);
    await Promise.all(
      emails.map((email, i) => instances[i % 3]?.auth.requestPasswordReset({ email, workspaceId })),
    );
    expect(await deliveries(emails, 30_000)).toEqual(emails.map(() => 1));
  });

  it("honour a revocation made through any one of them", async () => {
    const { emails, workspaceId } = await users(1, "revoked");
    const res = await clients(a).auth.login({ email: emails[0] as string, password, workspaceId });
    if (res.result.case !== "tokens") throw new Error("no tokens");
    const token = res.result.value.accessToken;
    await clients(b).auth.logout({}, { headers: { authorization: `Bearer ${token}` } });
    for (const k of [a, c]) {
      const deadline = Date.now() + 1_000;
      while ((await clients(k).introspection.introspect({ token }, asRoot())).active) {
        if (Date.now() > deadline) throw new Error(`${k.url} still says active`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  });

  it("lose no mail when an instance is killed with SIGKILL while sending", async () => {
    const secrets = await loadSecrets(a.config);
    const { emails, workspaceId } = await users(12, "killed");
    // Messages the killed instance sends at once: each may be accepted by the server and not
    // yet recorded as sent when the kill comes.
    const mailConcurrency = 4;
    // A fourth instance in its own process, the only one to take the requests.
    const child: ChildProcess = spawn(
      process.execPath,
      [path.join(root, "bin/keygate.mjs"), "serve"],
      {
        cwd: root,
        env: {
          PATH: process.env.PATH ?? "",
          KEYGATE_PORT: "0",
          KEYGATE_LOG_LEVEL: "info",
          KEYGATE_DATA_DIR: b.dataDir,
          DATABASE_URL: a.database.url,
          KEYGATE_KEY_ENCRYPTION_KEY: secrets.keyEncryptionKey.toString("base64"),
          KEYGATE_TOKEN_SECRET: secrets.tokenSecret.toString("base64"),
          KEYGATE_ISSUER: a.config.issuer,
          KEYGATE_METRICS_PORT: "0",
          KEYGATE_MIGRATE_ON_START: "false",
          KEYGATE_BOOTSTRAP: "false",
          KEYGATE_SMTP_URL: smtp.url,
          KEYGATE_MAIL_CONCURRENCY: String(mailConcurrency),
          KEYGATE_RATE_LIMITS: a.env.KEYGATE_RATE_LIMITS ?? "",
          ...instanceEnv,
        },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        const match = /"url":"(http:\/\/[^"]+)".*"msg":"keygate listening"/.exec(out);
        if (match) resolve(match[1] as string);
      });
      child.once("exit", (code) => reject(new Error(`exited with ${code}: ${out}`)));
    });
    const auth = createClient(
      AuthService,
      createConnectTransport({ baseUrl: url, httpVersion: "2" }),
    );
    const before = smtp.received.length;
    await Promise.all(emails.map((email) => auth.requestPasswordReset({ email, workspaceId })));
    // Killed once the first of these messages is through, with others in flight.
    while (smtp.received.length === before) await new Promise((r) => setTimeout(r, 5));
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    const counts = await deliveries(emails, 30_000);
    expect(counts.every((n) => n >= 1)).toBe(true);
    // At least once: only a message whose acceptance the killed sender could not record can
    // arrive twice, and it had at most `mailConcurrency` of those in flight.
    expect(counts.filter((n) => n > 1).length).toBeLessThanOrEqual(mailConcurrency);
    expect(counts.every((n) => n <= 2)).toBe(true);
  });
});

describe("instances on one database and their issuer", () => {
  it("an instance without KEYGATE_ISSUER refuses to start, in one line that names it", async () => {
    // Before, it started with its own listener URL as the issuer and answered active: false
    // for every token of the other instances, with no log line saying why.
    const error = await startPeerKeygate(a, {
      ...instanceEnv,
      KEYGATE_ISSUER: "",
      KEYGATE_PORT: String(await freePort()),
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      "KEYGATE_ISSUER: required with DATABASE_URL, the same on every instance",
    ]);
  });

  it("with the same KEYGATE_ISSUER on another port, each accepts the other's tokens", async () => {
    const d = await startPeerKeygate(a, {
      ...instanceEnv,
      KEYGATE_ISSUER: a.config.issuer,
      KEYGATE_PORT: String(await freePort()),
    });
    try {
      expect(d.url).not.toBe(a.url);
      const { emails, workspaceId } = await users(1, "issuer");
      const email = emails[0] as string;
      for (const [from, to] of [
        [a, d],
        [d, a],
      ] as const) {
        const res = await clients(from).auth.login({ email, password, workspaceId });
        if (res.result.case !== "tokens") throw new Error("no tokens");
        const answer = await clients(to).introspection.introspect(
          { token: res.result.value.accessToken },
          asRoot(),
        );
        expect(answer.active).toBe(true);
      }
    } finally {
      await d.stop();
    }
  });
});
