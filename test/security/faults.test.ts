import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { Role } from "../../gen/keygate/v1/types_pb.js";
import { loadSecrets } from "../../src/crypto/secrets.js";
import { sql } from "../../src/db/sql.js";
import { usingExternalPostgres } from "../support/database.js";
import { uniqueEmail } from "../support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "../support/server.js";
import { startSmtpServer } from "../support/smtp.js";
import { startTcpProxy, throughProxy } from "../support/tcp-proxy.js";

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let smtpLink: Awaited<ReturnType<typeof startTcpProxy>>;
let rootKey: string;
let workspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;

const password = "correct horse battery staple";
const as = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const count = z.object({ n: z.number() });

async function until(done: () => Promise<boolean> | boolean, ms: number, what: string) {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(25);
  }
}

beforeAll(async () => {
  smtp = await startSmtpServer();
  // Mail goes through a link that can be cut: the SMTP server "goes down" and "comes back".
  smtpLink = await startTcpProxy({ host: "127.0.0.1", port: smtp.port });
  keygate = await startTestKeygate({
    KEYGATE_SMTP_URL: `smtp://127.0.0.1:${smtpLink.port}`,
    KEYGATE_REFRESH_GRACE_SECONDS: "120",
  });
  rootKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
});
afterAll(async () => {
  await keygate?.stop();
  await smtpLink?.stop();
  await smtp?.stop();
});

describe(`SECURITY.md 24: database down under load fails closed and recovers without a restart (${usingExternalPostgres ? "PostgreSQL, four writers" : "embedded, one writer"})`, {
  timeout: 150_000,
}, () => {
  it("writes answer UNAVAILABLE while the link is cut, readiness is 503, and no write is lost or doubled", async () => {
    const proxy = await startTcpProxy({
      host: "127.0.0.1",
      port: Number(new URL(keygate.database.url).port),
    });
    const peer = await startPeerKeygate(keygate, {
      DATABASE_URL: throughProxy(keygate.database.url, proxy.port),
    });
    try {
      const onPeer = createClient(
        AdminService,
        createConnectTransport({ baseUrl: peer.url, httpVersion: "2" }),
      );
      const outcomes = new Map<string, string>();
      let stop = false;
      // Writers provision users with unique emails, one call at a time each. On the embedded
      // database one writer only: pglite-socket interleaves the extended-protocol messages of
      // concurrent statements outside transactions (see docs/database.md).
      const writers = Array.from({ length: usingExternalPostgres ? 4 : 1 }, async () => {
        while (!stop) {
          const email = uniqueEmail("load");
          const outcome = await onPeer
            .provisionUser(
              { email, workspaceId, role: Role.MEMBER },
              { ...as(rootKey), timeoutMs: 10_000 },
            )
            .then(
              () => "ok",
              (e) => Code[ConnectError.from(e).code] as string,
            );
          outcomes.set(email, outcome);
          if (outcome !== "ok") await sleep(20);
        }
      });
      await until(
        () => [...outcomes.values()].filter((o) => o === "ok").length >= 8,
        20_000,
        "load",
      );
      await proxy.cut();
      await until(
        async () => (await fetch(`${peer.url}/readyz`)).status === 503,
        10_000,
        "readiness 503",
      );
      await until(
        () => [...outcomes.values()].filter((o) => o === "Unavailable").length >= 2,
        10_000,
        "UNAVAILABLE answers",
      );
      await proxy.restore();
      await until(
        async () => (await fetch(`${peer.url}/readyz`)).status === 200,
        15_000,
        "readiness 200 again",
      );
      const okBefore = [...outcomes.values()].filter((o) => o === "ok").length;
      await until(
        () => [...outcomes.values()].filter((o) => o === "ok").length >= okBefore + 8,
        20_000,
        "writes after recovery",
      );
      stop = true;
      await Promise.all(writers);

      const tally: Record<string, number> = {};
      for (const o of outcomes.values()) tally[o] = (tally[o] ?? 0) + 1;
      console.log("SECURITY.md 24 outcomes under a cut database link:", tally);
      expect(Object.keys(tally).sort()).toEqual(["Unavailable", "ok"]);

      // Every acknowledged write is there exactly once; a refused one at most once (the link
      // may have gone down after its commit reached the database but before the answer did).
      const rows = await keygate.database.pool.any(
        sql.type(z.object({ email: z.string(), n: z.number() }))`
          SELECT email, count(*)::int AS n FROM users
          WHERE email = ANY(${sql.array([...outcomes.keys()], "text")}) GROUP BY email`,
      );
      const stored = new Map(rows.map((r) => [r.email, r.n]));
      for (const [email, outcome] of outcomes) {
        if (outcome === "ok") expect(stored.get(email), email).toBe(1);
        else expect(stored.get(email) ?? 0, email).toBeLessThanOrEqual(1);
      }
    } finally {
      await peer.stop();
      await proxy.stop();
    }
  });
});

describe("SECURITY.md 25: SMTP down then up delivers every outbox mail exactly once", {
  timeout: 120_000,
}, () => {
  it("mail enqueued while SMTP is unreachable is delivered once each when it returns", async () => {
    const emails = Array.from({ length: 8 }, () => uniqueEmail("outage"));
    for (const email of emails) {
      await admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        as(rootKey),
      );
    }
    await smtpLink.cut();
    for (const email of emails) await auth.requestPasswordReset({ email, workspaceId });
    const attempted = () =>
      keygate.database.pool.oneFirst(sql.type(count)`
        SELECT count(*)::int AS n FROM mail_outbox
        WHERE recipient = ANY(${sql.array(emails, "text")}) AND attempts > 0 AND sent_at IS NULL`);
    await until(async () => (await attempted()) === emails.length, 15_000, "failed attempts");
    expect(smtp.received.filter((m) => emails.some((e) => m.to.includes(e)))).toHaveLength(0);

    await smtpLink.restore();
    const sent = () =>
      keygate.database.pool.oneFirst(sql.type(count)`
        SELECT count(*)::int AS n FROM mail_outbox
        WHERE recipient = ANY(${sql.array(emails, "text")}) AND sent_at IS NOT NULL`);
    await until(async () => (await sent()) === emails.length, 30_000, "delivery");
    // Longer than a poll interval more: nothing is sent a second time.
    await sleep(1_500);
    for (const email of emails) {
      expect(
        smtp.received.filter((m) => m.to.includes(email)),
        email,
      ).toHaveLength(1);
    }
  });
});

/** `keygate serve` in a child process on the test's database, as another replica. */
async function serveReplica(): Promise<{ child: ChildProcess; url: string; dataDir: string }> {
  const secrets = await loadSecrets(keygate.config);
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-kill-"));
  const child = spawn(process.execPath, [path.resolve("bin/keygate.mjs"), "serve"], {
    env: {
      PATH: process.env.PATH ?? "",
      KEYGATE_PORT: "0",
      KEYGATE_DATA_DIR: dataDir,
      KEYGATE_LOG_LEVEL: "info",
      DATABASE_URL: keygate.database.url,
      KEYGATE_MIGRATE_ON_START: "false",
      KEYGATE_BOOTSTRAP: "false",
      KEYGATE_KEY_ENCRYPTION_KEY: secrets.keyEncryptionKey.toString("base64"),
      KEYGATE_TOKEN_SECRET: secrets.tokenSecret.toString("base64"),
      KEYGATE_ISSUER: keygate.config.issuer,
      KEYGATE_MAIL_DEV_OUTBOX: "true",
      KEYGATE_METRICS_PORT: "0",
      KEYGATE_RATE_LIMITS: keygate.env.KEYGATE_RATE_LIMITS ?? "",
      KEYGATE_REFRESH_GRACE_SECONDS: "120",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`replica did not start:\n${out}`)), 45_000);
    child.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      const match = /"url":"(http:\/\/[^"]+)".*"msg":"keygate listening"/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(match[1] as string);
      }
    });
    child.stderr?.on("data", (c: Buffer) => {
      out += c.toString();
    });
    child.once("exit", (code) => reject(new Error(`replica exited with ${code}:\n${out}`)));
  });
  return { child, url, dataDir };
}

describe("SECURITY.md 26: SIGKILL during refresh rotations", () => {
  it("every parent is still usable or cleanly rotated, and no successor is orphaned", {
    timeout: 180_000,
  }, async () => {
    const email = uniqueEmail("kill");
    await admin.provisionUser({ email, password, workspaceId, role: Role.MEMBER }, as(rootKey));
    const parents: string[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await auth.login({ email, password, workspaceId });
      if (res.result.case !== "tokens") throw new Error("no tokens");
      parents.push(res.result.value.refreshToken);
    }
    const replica = await serveReplica();
    const exited = new Promise((r) => replica.child.once("exit", r));
    const onReplica = createClient(
      AuthService,
      createConnectTransport({ baseUrl: replica.url, httpVersion: "2" }),
    );
    let answered = 0;
    const calls = parents.map((refreshToken) =>
      onReplica.refresh({ refreshToken }).then(
        () => {
          answered++;
        },
        () => {},
      ),
    );
    // Kill once the first rotations have answered, with the rest in flight.
    await until(() => answered >= 3, 20_000, "first rotations");
    replica.child.kill("SIGKILL");
    await exited;
    await Promise.all(calls);
    await rm(replica.dataDir, { recursive: true, force: true });

    const pool = keygate.database.pool;
    const orphans = await pool.oneFirst(sql.type(count)`
        SELECT count(*)::int AS n FROM refresh_tokens c
        JOIN refresh_tokens p ON p.id = c.parent_id WHERE p.rotated_at IS NULL`);
    const childless = await pool.oneFirst(sql.type(count)`
        SELECT count(*)::int AS n FROM refresh_tokens p
        WHERE p.rotated_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM refresh_tokens c WHERE c.parent_id = p.id)`);
    expect(orphans).toBe(0);
    expect(childless).toBe(0);

    // Rotated parents get their successor again (grace window); the others rotate now.
    let usable = 0;
    for (const refreshToken of parents) {
      const res = await auth.refresh({ refreshToken });
      expect(res.tokens?.refreshToken).toMatch(/^kgr_/);
      usable++;
    }
    console.log(
      `SECURITY.md 26: ${parents.length} refreshes in flight, ${answered} answered before SIGKILL, ${usable} parents usable afterwards`,
    );
    expect(usable).toBe(parents.length);
  });
});
