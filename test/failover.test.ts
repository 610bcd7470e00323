import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";
import { usingExternalPostgres } from "./support/database.js";
import {
  havePostgresBinaries,
  type ReplicatedPostgres,
  startReplicatedPostgres,
} from "./support/replicated-postgres.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";
import { startTcpProxy } from "./support/tcp-proxy.js";

/**
 * A PostgreSQL failover under load, on real parts: a primary and its synchronous standby
 * (Debian's PostgreSQL 15 binaries), one address in front (the fault tests' TCP proxy, switched
 * at promotion the way a managed endpoint moves), two Keygate instances on that address, and
 * keygate/verify in another process following the second instance's revocation feed. The
 * primary crashes mid-load; the address reaches the standby while it is still read-only; the
 * standby is promoted; later the old primary comes back as a standby of the new one.
 *
 * Runs with TEST_DATABASE_URL set (the PostgreSQL suite) and the binaries present; the
 * clusters are its own, in a temporary directory, and go away with it.
 */
const enabled = usingExternalPostgres && havePostgresBinaries;

type Outcome = "ok" | string;
const password = "correct horse battery staple";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const outcomeOf = (e: unknown) => Code[ConnectError.from(e).code] as string;
const began = performance.now();
/** Progress on stderr, so that a run that stalls shows where. */
const step = (what: string) =>
  process.stderr.write(`failover +${Math.round(performance.now() - began)} ms: ${what}\n`);

describe.runIf(enabled)("PostgreSQL failover under load", { timeout: 180_000 }, () => {
  let ha: ReplicatedPostgres;
  let proxy: Awaited<ReturnType<typeof startTcpProxy>>;
  let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
  const instances: TestKeygate[] = [];
  let verifier: ChildProcess | undefined;
  /** Ends the test's loops (load, watchers, feeds), also when an assertion failed mid-way. */
  const running = { load: true, watching: true, feeds: true };

  beforeAll(async () => {
    ha = await startReplicatedPostgres();
    await ha.query(ha.a.url(), "CREATE DATABASE keygate");
    proxy = await startTcpProxy({ host: "127.0.0.1", port: ha.a.port });
    smtp = await startSmtpServer();
    const address = `postgres://postgres@127.0.0.1:${proxy.port}/keygate`;
    const env = {
      DATABASE_URL: address,
      KEYGATE_SMTP_URL: smtp.url,
      KEYGATE_REFRESH_GRACE_SECONDS: "0",
      KEYGATE_BCRYPT_COST: "10",
      // A message claimed when the primary crashed waits out its lease before another try.
      KEYGATE_MAIL_LEASE_MS: "3000",
    };
    const first = await startTestKeygate(env);
    instances.push(first, await startPeerKeygate(first, env));
  }, 120_000);
  afterAll(async () => {
    running.load = running.watching = running.feeds = false;
    if (verifier && verifier.exitCode === null) {
      const exited = new Promise((r) => verifier?.once("exit", r));
      verifier.kill("SIGTERM");
      await exited;
    }
    for (const k of instances) await k.stop().catch(() => {});
    await proxy?.stop();
    await smtp?.stop();
    await ha?.stop();
  });

  it("answers only OK or UNAVAILABLE, loses and doubles nothing acknowledged, and misses no revocation", async () => {
    const [one, two] = instances as [TestKeygate, TestKeygate];
    const clients = instances.map((k) => {
      const transport = createConnectTransport({ baseUrl: k.url, httpVersion: "2" });
      return {
        keygate: k,
        auth: createClient(AuthService, transport),
        admin: createClient(AdminService, transport),
        introspection: createClient(TokenIntrospectionService, transport),
      };
    });
    const root = { headers: { authorization: `Bearer ${one.bootstrapped?.adminKey}` } };
    const workspaceId = one.bootstrapped?.workspaceId as string;
    const [c1] = clients as [(typeof clients)[0], (typeof clients)[0]];
    let n = 0;
    const provision = async (tag: string) => {
      const email = `${tag}-${++n}@failover.test`;
      const user = await c1.admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
      return { email, userId: user.user?.id as string };
    };
    const login = async (client: (typeof clients)[0], email: string) => {
      const res = await client.auth.login({ email, password, workspaceId });
      if (res.result.case !== "tokens") throw new Error("no tokens");
      return res.result.value;
    };

    // The verifier: keygate/verify in its own process, on the second instance's feed.
    const verifierKey = (
      await c1.admin.createAdminKey(
        { name: "verifier", role: AdminKeyRole.READ_ONLY, introspect: true },
        root,
      )
    ).secret;
    verifier = spawn(
      process.execPath,
      ["--import", "tsx", path.resolve(import.meta.dirname, "fixtures/internal-service.ts")],
      {
        env: {
          ...process.env,
          KEYGATE_URL: two.url,
          KEYGATE_ADMIN_KEY: verifierKey,
          KEYGATE_AUDIENCE: one.config.audience,
          KEYGATE_ISSUER: one.config.issuer,
        },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    const verifierPort = await new Promise<number>((resolve, reject) => {
      let out = "";
      verifier?.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0] as string).rpc);
      });
      verifier?.once("exit", (code) => reject(new Error(`verifier exited with ${code}`)));
    });
    const verified = createClient(
      AuthService,
      createConnectTransport({ baseUrl: `http://127.0.0.1:${verifierPort}`, httpVersion: "2" }),
    );

    step("verifier up");
    // Each instance's revocation feed, followed as a verifier does (resuming from its cursor).
    const feeds = clients.map((client) => {
      const feed = { cursors: [] as bigint[], cursor: "" };
      const follow = async () => {
        while (running.feeds) {
          try {
            const stream = client.introspection.watchRevocations(
              { cursor: feed.cursor },
              { ...root, signal: AbortSignal.timeout(120_000) },
            );
            for await (const event of stream) {
              if (!running.feeds) return;
              if (event.event.case === "revocation") {
                feed.cursors.push(BigInt(event.event.value.cursor));
                feed.cursor = event.event.value.cursor;
              } else if (event.event.case === "snapshotComplete") {
                feed.cursor = event.event.value.cursor;
              } else if (event.event.case === "heartbeat") {
                feed.cursor = event.event.value.cursor;
              }
            }
          } catch {
            await sleep(100);
          }
        }
      };
      return { feed, done: follow() };
    });

    // Users for the load: some to log in, some to block, some to ask for mail.
    const loginUsers = await Promise.all(Array.from({ length: 6 }, () => provision("login")));
    const blockUsers = await Promise.all(Array.from({ length: 12 }, () => provision("block")));
    const mailUsers = await Promise.all(Array.from({ length: 30 }, () => provision("mail")));
    const lastLoggedOut = await provision("last-logout");
    const lastBlocked = await provision("last-block");
    const cursorBefore = BigInt(
      (
        await ha.query<{ c: string }>(
          ha.a.url("keygate"),
          "SELECT coalesce(max(cursor), 0)::text AS c FROM revocations",
        )
      )[0]?.c ?? "0",
    );

    step("users provisioned");
    // What the load was told.
    const tally = new Map<string, number>();
    const count = (op: string, outcome: Outcome) => {
      const key = `${op}:${outcome}`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
    };
    interface Session {
      sessionId: string;
      refresh: string;
      access: string;
      rotations: number;
      uncertain: boolean;
      ended: boolean;
    }
    const sessions: Session[] = [];
    const rotatedParents: string[] = [];
    const loggedOut: { session: Session; outcome: Outcome }[] = [];
    const blocked: { userId: string; access: string; outcome: Outcome }[] = [];
    const mailed: { email: string; outcome: Outcome }[] = [];
    // Time of each instance's writes answered OK, to measure when writes resume.
    const okAt: number[][] = [[], []];

    const worker = async (i: number, w: number) => {
      const client = clients[i] as (typeof clients)[0];
      for (let step = w; running.load; step++) {
        const op = ["login", "refresh", "refresh", "logout", "block", "mail"][step % 6] as string;
        let outcome: Outcome = "skip";
        const call = async (f: () => Promise<void>) => {
          try {
            await f();
            outcome = "ok";
            okAt[i]?.push(performance.now());
          } catch (e) {
            outcome = outcomeOf(e);
          }
          count(op, outcome);
        };
        if (op === "login") {
          const user = loginUsers[(step + i) % loginUsers.length] as { email: string };
          await call(async () => {
            const t = await login(client, user.email);
            sessions.push({
              sessionId: t.sessionId,
              refresh: t.refreshToken,
              access: t.accessToken,
              rotations: 0,
              uncertain: false,
              ended: false,
            });
          });
        } else if (op === "refresh") {
          const s = sessions.find((x) => !x.uncertain && !x.ended && x.rotations < 50);
          if (!s) continue;
          s.ended = true; // held by this worker until the answer
          await call(async () => {
            const t = await client.auth.refresh({ refreshToken: s.refresh });
            rotatedParents.push(s.refresh);
            s.refresh = t.tokens?.refreshToken as string;
            s.access = t.tokens?.accessToken as string;
            s.rotations++;
          });
          if (outcome !== "ok") s.uncertain = true;
          s.ended = false;
        } else if (op === "logout") {
          const s = sessions.find((x) => !x.uncertain && !x.ended && x.rotations > 0);
          if (!s) continue;
          s.ended = true;
          await call(() =>
            client.auth.logout({ refreshToken: s.refresh }, as(s.access)).then(() => {}),
          );
          loggedOut.push({ session: s, outcome });
        } else if (op === "block") {
          const user = blockUsers.shift();
          if (!user) continue;
          const t = await login(client, user.email).catch(() => undefined);
          if (!t) {
            blockUsers.push(user);
            continue;
          }
          await call(() =>
            client.admin
              .blockUser({ userId: user.userId, reason: "failover" }, root)
              .then(() => {}),
          );
          blocked.push({ userId: user.userId, access: t.accessToken, outcome });
        } else {
          const user = mailUsers.shift();
          if (!user) continue;
          await call(() =>
            client.auth.requestPasswordReset({ email: user.email, workspaceId }).then(() => {}),
          );
          mailed.push({ email: user.email, outcome });
        }
        if (outcome !== "ok") await sleep(50);
      }
    };
    const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
    const workers = clients.flatMap((_, i) => [0, 1, 2].map((w) => worker(i, w)));

    const okCount = () =>
      [...tally].filter(([k]) => k.endsWith(":ok")).reduce((a, [, v]) => a + v, 0);
    await ha.settle("load", 30_000, async () => (okCount() >= 40 ? true : undefined));

    step("load running");
    // A logout and a block acknowledged just before the switch.
    const lastLogin = await login(c1, lastLoggedOut.email);
    await c1.auth.logout({ refreshToken: lastLogin.refreshToken }, as(lastLogin.accessToken));
    const lastBlockedToken = (await login(clients[1] as (typeof clients)[0], lastBlocked.email))
      .accessToken;
    await (clients[1] as (typeof clients)[0]).admin.blockUser(
      { userId: lastBlocked.userId, reason: "just before" },
      root,
    );
    // The logout was made on the first instance, the block on the second.
    const revokedTokens = [lastLogin.accessToken, lastBlockedToken];
    const revokedAt = performance.now();

    // Watch those two tokens throughout: never active on the instance that revoked it, nor on
    // the other or in the verifier once the revocation feed has had its second to carry it
    // (SECURITY.md 38's bound), and never let through after that.
    const revokedSeen: string[] = [];
    const watcher = (async () => {
      while (running.watching) {
        for (const [t, token] of revokedTokens.entries()) {
          const settled = () => performance.now() - revokedAt > 1_000;
          for (const [c, client] of clients.entries()) {
            const answer = await client.introspection
              .introspect({ token }, root)
              .then((r) => (r.active ? "active" : "inactive"), outcomeOf);
            if (c === t || settled() || answer !== "active")
              revokedSeen.push(`introspect:${answer}`);
          }
          const through = await verified.getSession({}, as(token)).then(() => "allowed", outcomeOf);
          if (settled() || through !== "allowed") revokedSeen.push(`verifier:${through}`);
        }
        await sleep(100);
      }
    })();

    step("revoked just before");
    // The failover.
    const crashedAt = performance.now();
    await ha.crash(ha.a);
    proxy.switchTo({ host: "127.0.0.1", port: ha.b.port });
    const readiness = async (k: TestKeygate) =>
      (await (await fetch(`${k.url}/readyz`)).json()) as { status: string; reason?: string };
    // The address reaches a standby that only reads: both instances say so and refuse writes.
    for (const k of instances) {
      await ha.settle("readiness 503", 15_000, async () =>
        (await readiness(k)).status === "not_ready" ? true : undefined,
      );
    }
    const readOnlyReasons = await Promise.all(
      instances.map(async (k) => (await readiness(k)).reason),
    );
    await sleep(500);
    step("read-only seen");
    const promotedAt = performance.now();
    await ha.promote(ha.b);
    for (const k of instances) {
      await ha.settle("readiness 200", 30_000, async () =>
        (await readiness(k)).status === "ready" ? true : undefined,
      );
    }
    step("ready again");
    const resumed = await Promise.all(
      [0, 1].map((i) =>
        ha.settle(`writes on instance ${i + 1}`, 30_000, async () => {
          const after = okAt[i]?.find((t) => t > promotedAt);
          return after === undefined ? undefined : after - promotedAt;
        }),
      ),
    );

    step("writes resumed");
    // The revocation listeners reconnect by themselves, to the new primary.
    const listeners = await ha.settle("listeners back", 30_000, async () => {
      const rows = await ha.query<{ n: number }>(
        ha.b.url("keygate"),
        `SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE datname = 'keygate' AND query = 'LISTEN keygate_revocations'`,
      );
      return (rows[0]?.n ?? 0) >= 2 ? (rows[0]?.n as number) : undefined;
    });

    step("listeners back");
    // Later: the old primary rejoins as the synchronous standby of the new one, under load.
    await sleep(1_000);
    const rejoinStarted = performance.now();
    await ha.rejoin(ha.a, ha.b);
    const rejoinMs = performance.now() - rejoinStarted;
    step("rejoined");
    const okBeforeEnd = okCount();
    await ha.settle("load after rejoin", 30_000, async () =>
      okCount() >= okBeforeEnd + 20 ? true : undefined,
    );
    running.load = false;
    await Promise.all(workers);
    running.watching = false;
    await watcher;

    step("load stopped");
    const figures = {
      outcomes: Object.fromEntries([...tally].sort()),
      readinessWhileReadOnly: readOnlyReasons,
      unavailableForMs: Math.round(promotedAt - crashedAt),
      writesResumedAfterPromotionMs: resumed.map(Math.round),
      // From the last write acknowledged before the crash to the first one after promotion.
      writeOutageMs: [0, 1].map((i) =>
        Math.round(
          promotedAt +
            (resumed[i] as number) -
            Math.max(...(okAt[i] ?? []).filter((t) => t < crashedAt)),
        ),
      ),
      listenersOnNewPrimary: listeners,
      oldPrimaryRejoinedMs: Math.round(rejoinMs),
    };
    console.log("failover figures:", figures);

    // 1. Every call answered OK or UNAVAILABLE.
    const codes = new Set([...tally.keys()].map((k) => k.split(":")[1]));
    expect([...codes].filter((c) => c !== "ok" && c !== "Unavailable")).toEqual([]);
    expect(codes.has("Unavailable")).toBe(true);
    expect(
      readOnlyReasons.every((r) => r === "database_read_only" || r === "database_unreachable"),
    ).toBe(true);

    // 2. Nothing acknowledged lost or doubled, read on the new primary.
    const db = ha.b.url("keygate");
    const stored = new Map(
      (
        await ha.query<{ id: string; revoked: boolean; tokens: number }>(
          db,
          `SELECT s.id, s.revoked_at IS NOT NULL AS revoked, count(r.id)::int AS tokens
           FROM sessions s LEFT JOIN refresh_tokens r ON r.session_id = s.id
           WHERE s.id = ANY($1::uuid[]) GROUP BY s.id, s.revoked_at`,
          [sessions.map((s) => s.sessionId)],
        )
      ).map((r) => [r.id, r]),
    );
    for (const s of sessions) {
      const row = stored.get(s.sessionId);
      expect(row, s.sessionId).toBeDefined();
      // One token from the login and one per rotation; one more when the last answer was lost.
      if (s.uncertain) expect(row?.tokens).toBeGreaterThanOrEqual(s.rotations + 1);
      else expect(row?.tokens, s.sessionId).toBe(s.rotations + 1);
    }
    for (const { session, outcome } of loggedOut) {
      if (outcome === "ok")
        expect(stored.get(session.sessionId)?.revoked, "logout kept").toBe(true);
    }
    const blockedRows = new Map(
      (
        await ha.query<{ id: string; blocked: boolean }>(
          db,
          "SELECT id, blocked FROM users WHERE id = ANY($1::uuid[])",
          [[...blocked.map((b) => b.userId), lastBlocked.userId]],
        )
      ).map((r) => [r.id, r.blocked]),
    );
    for (const b of blocked) if (b.outcome === "ok") expect(blockedRows.get(b.userId)).toBe(true);
    expect(blockedRows.get(lastBlocked.userId)).toBe(true);

    // No parent that rotated still refreshes (the grace window is off here).
    let parentsRefused = 0;
    for (const parent of rotatedParents) {
      const outcome = await c1.auth.refresh({ refreshToken: parent }).then(() => "ok", outcomeOf);
      expect(outcome, "a rotated parent refreshed").not.toBe("ok");
      parentsRefused++;
    }

    // Outbox: one message per acknowledged request, at most one per refused one, all delivered.
    const outbox = new Map(
      (
        await ha.query<{ recipient: string; n: number; sent: number; attempts: number }>(
          db,
          `SELECT recipient, count(*)::int AS n, count(sent_at)::int AS sent,
                  max(attempts)::int AS attempts
           FROM mail_outbox WHERE recipient = ANY($1::text[]) GROUP BY recipient`,
          [mailed.map((m) => m.email)],
        )
      ).map((r) => [r.recipient, r]),
    );
    await ha.settle("outbox delivered", 30_000, async () => {
      const rows = await ha.query<{ n: number }>(
        db,
        "SELECT count(*)::int AS n FROM mail_outbox WHERE recipient = ANY($1::text[]) AND sent_at IS NULL",
        [mailed.map((m) => m.email)],
      );
      return rows[0]?.n === 0 ? true : undefined;
    });
    let resent = 0;
    for (const { email, outcome } of mailed) {
      const row = outbox.get(email);
      const received = smtp.received.filter((m) => m.to.includes(email)).length;
      if (outcome === "ok") {
        expect(row?.n, email).toBe(1);
        expect(received, email).toBeGreaterThanOrEqual(1);
      } else expect(row?.n ?? 0, email).toBeLessThanOrEqual(1);
      // SMTP delivery is at least once: a second copy only when storing sent_at failed.
      if (received > 1) {
        resent++;
        expect(row?.attempts, email).toBeGreaterThan(1);
      }
    }

    // 3. No revocation missed: the two tokens never passed, and are refused now everywhere.
    expect(revokedSeen.filter((s) => s.endsWith(":active") || s.endsWith(":allowed"))).toEqual([]);
    for (const token of revokedTokens) {
      for (const client of clients) {
        expect((await client.introspection.introspect({ token }, root)).active).toBe(false);
      }
      expect(await verified.getSession({}, as(token)).then(() => "allowed", outcomeOf)).toBe(
        "Unauthenticated",
      );
    }
    for (const b of blocked) {
      if (b.outcome !== "ok") continue;
      for (const client of clients) {
        expect((await client.introspection.introspect({ token: b.access }, root)).active).toBe(
          false,
        );
      }
    }

    // The feeds: every revocation committed since the load began, once each, in order.
    running.feeds = false;
    const committed = (
      await ha.query<{ c: string }>(
        db,
        "SELECT cursor::text AS c FROM revocations WHERE cursor > $1 ORDER BY cursor",
        [String(cursorBefore)],
      )
    ).map((r) => BigInt(r.c));
    for (const [i, f] of feeds.entries()) {
      const seen = f.feed.cursors.filter((c) => c > cursorBefore && c <= (committed.at(-1) ?? 0n));
      expect(seen, `feed of instance ${i + 1}`).toEqual(committed);
    }
    console.log("failover checks:", {
      sessions: sessions.length,
      rotations: rotatedParents.length,
      parentsRefused,
      logouts: loggedOut.filter((l) => l.outcome === "ok").length,
      blocks: blocked.filter((b) => b.outcome === "ok").length,
      mails: mailed.filter((m) => m.outcome === "ok").length,
      mailsResent: resent,
      revocationsFollowed: committed.length,
      revokedTokenChecks: revokedSeen.length,
    });
  });
});
