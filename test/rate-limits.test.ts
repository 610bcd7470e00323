import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { ManualClock } from "../src/clock.js";
import { builtInRateLimits } from "../src/config.js";
import { sql } from "../src/db/sql.js";
import { RateLimiter, sweepRateLimits } from "../src/domain/rate-limits.js";
import { failure } from "./support/failure.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";

// The real default limits, two instances on one database, and an injected clock.
const clock = new ManualClock();
let a: TestKeygate;
let b: TestKeygate;
let authA: ReturnType<typeof createClient<typeof AuthService>>;
let authB: ReturnType<typeof createClient<typeof AuthService>>;
let workspaceId: string;
const password = "correct horse battery staple";
let n = 0;
const email = (tag: string) => `${tag}-${++n}@example.test`;

const realLimits = {
  // Raised only where a test needs many logins of one account for another purpose.
  KEYGATE_RATE_LIMITS: JSON.stringify({
    ...builtInRateLimits,
    signup_ip: { limit: 1000, window_seconds: 3600 },
    // Lowered so that a test can fill it with three workspaces' logins.
    deployment_ip: { limit: 25, window_seconds: 900 },
  }),
  KEYGATE_LOCKOUT_THRESHOLD: "5",
};

beforeAll(async () => {
  a = await startTestKeygate({ ...realLimits, KEYGATE_TRUSTED_PROXIES: "127.0.0.1" }, { clock });
  b = await startPeerKeygate(a, { KEYGATE_TRUSTED_PROXIES: "" }, { clock });
  workspaceId = a.bootstrapped?.workspaceId as string;
  authA = createClient(AuthService, createConnectTransport({ baseUrl: a.url, httpVersion: "1.1" }));
  authB = createClient(AuthService, createConnectTransport({ baseUrl: b.url, httpVersion: "1.1" }));
});
afterAll(async () => {
  await b?.stop();
  await a?.stop();
});

async function refused(p: Promise<unknown>) {
  const { code, reason, error } = await failure(p);
  const delay = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
  return {
    code,
    reason,
    retryMs: delay ? Number(delay.seconds) * 1000 + delay.nanos / 1e6 : undefined,
    message: error.rawMessage,
  };
}

async function account(tag: string) {
  const address = email(tag);
  await authA.signUp({ email: address, password }, { headers: { "x-workspace-id": workspaceId } });
  return address;
}

describe("SECURITY.md 18: rate limits in PostgreSQL", () => {
  it("hold across instances: three resets through A, the fourth through B is refused with a retry delay", async () => {
    const address = await account("reset");
    for (let i = 0; i < 3; i++) await authA.requestPasswordReset({ email: address, workspaceId });
    const fourth = await refused(authB.requestPasswordReset({ email: address, workspaceId }));
    expect(fourth.code).toBe(Code.ResourceExhausted);
    expect(fourth.reason).toBe("RATE_LIMITED");
    expect(fourth.retryMs).toBeGreaterThan(3_500_000);
    expect(fourth.retryMs).toBeLessThanOrEqual(3_600_000);
  });

  it("answer the same whether or not the address has an account", async () => {
    const known = await account("known");
    const unknown = email("unknown");
    for (let i = 0; i < 3; i++) {
      await authA.requestPasswordReset({ email: known, workspaceId });
      await authB.requestPasswordReset({ email: unknown, workspaceId });
    }
    const k = await refused(authA.requestPasswordReset({ email: known, workspaceId }));
    const u = await refused(authA.requestPasswordReset({ email: unknown, workspaceId }));
    expect(u).toEqual(k);
  });

  it("use a sliding window: the next request is allowed once the oldest hit leaves it", async () => {
    clock.advance(3_600_001); // past the earlier tests' per-IP hits
    const address = await account("window");
    await authA.requestPasswordReset({ email: address, workspaceId });
    clock.advance(1_800_000);
    await authA.requestPasswordReset({ email: address, workspaceId });
    await authA.requestPasswordReset({ email: address, workspaceId });
    const refusedNow = await refused(authA.requestPasswordReset({ email: address, workspaceId }));
    expect(refusedNow.retryMs).toBeLessThanOrEqual(1_800_000);
    clock.advance(1_800_001);
    await authB.requestPasswordReset({ email: address, workspaceId });
  });

  it("count logins per account: ten in fifteen minutes, the eleventh is refused", async () => {
    const address = await account("logins");
    clock.advance(16 * 60_000);
    for (let i = 0; i < 10; i++) {
      await (i % 2 ? authA : authB).login({ email: address, password, workspaceId });
    }
    expect((await refused(authA.login({ email: address, password, workspaceId }))).reason).toBe(
      "RATE_LIMITED",
    );
  });

  it("count logins per client IP, taken from X-Forwarded-For only behind a trusted proxy", async () => {
    clock.advance(16 * 60_000);
    const from = (ip: string) => ({ headers: { "x-forwarded-for": `198.51.100.1, ${ip}` } });
    for (let i = 0; i < 10; i++) {
      await refused(
        authA.login(
          { email: email("ip"), password: "wrong wrong wrong", workspaceId },
          from("203.0.113.7"),
        ),
      );
    }
    const eleventh = await refused(
      authA.login({ email: email("ip"), password, workspaceId }, from("203.0.113.7")),
    );
    expect(eleventh.reason).toBe("RATE_LIMITED");
    // Another client behind the same proxy is not affected...
    expect(
      (
        await refused(
          authA.login({ email: email("ip"), password, workspaceId }, from("203.0.113.8")),
        )
      ).reason,
    ).toBe("INVALID_CREDENTIALS");
    // ...and instance B, which trusts no proxy, counts the peer, not the header.
    expect(
      (
        await refused(
          authB.login({ email: email("ip"), password, workspaceId }, from("203.0.113.7")),
        )
      ).reason,
    ).toBe("INVALID_CREDENTIALS");
    const ips = await a.database.pool.anyFirst(sql.type(z.object({ ip_address: z.string() }))`
      SELECT DISTINCT ip_address FROM audit_events WHERE type = 'login_failed' AND ip_address IS NOT NULL`);
    expect(ips).toEqual(expect.arrayContaining(["203.0.113.7", "203.0.113.8", "127.0.0.1"]));
    expect(ips).not.toContain("198.51.100.1");
  });
});

describe("SECURITY.md 18: per-IP limits count each client once, however it spreads its calls", () => {
  // Instance A trusts the loopback proxy, so X-Forwarded-For names the client.
  const from = (ip: string) => ({ headers: { "x-forwarded-for": ip } });
  const wrongLogin = (ip: string, workspace = workspaceId) =>
    refused(
      authA.login(
        { email: email("spread"), password: "wrong wrong wrong", workspaceId: workspace },
        from(ip),
      ),
    );

  it("counts the addresses of one IPv6 /64 as one client", async () => {
    clock.advance(16 * 60_000);
    for (let i = 1; i <= 10; i++) {
      expect((await wrongLogin(`2001:db8:7:1::${i.toString(16)}`)).reason).toBe(
        "INVALID_CREDENTIALS",
      );
    }
    const sameNetwork = await wrongLogin("2001:db8:7:1:ffff:ffff:ffff:9");
    expect(sameNetwork.code).toBe(Code.ResourceExhausted);
    expect(sameNetwork.reason).toBe("RATE_LIMITED");
    expect((await wrongLogin("2001:db8:7:2::1")).reason).toBe("INVALID_CREDENTIALS");
  });

  it("counts an IPv4-mapped IPv6 address, in either spelling, as its IPv4 address", async () => {
    clock.advance(16 * 60_000);
    for (let i = 0; i < 4; i++) await wrongLogin("203.0.113.50");
    for (let i = 0; i < 3; i++) await wrongLogin("::ffff:cb00:7132");
    for (let i = 0; i < 3; i++) await wrongLogin("::ffff:203.0.113.50");
    expect((await wrongLogin("203.0.113.50")).reason).toBe("RATE_LIMITED");
  });

  it("counts 127.0.0.1 and ::1 as one client", async () => {
    clock.advance(16 * 60_000);
    const direct = () =>
      refused(authA.login({ email: email("loop"), password: "wrong wrong wrong", workspaceId }));
    for (let i = 0; i < 5; i++) expect((await direct()).reason).toBe("INVALID_CREDENTIALS");
    for (let i = 0; i < 5; i++)
      expect((await wrongLogin("::1")).reason).toBe("INVALID_CREDENTIALS");
    expect((await wrongLogin("::1")).reason).toBe("RATE_LIMITED");
    expect((await direct()).reason).toBe("RATE_LIMITED");
  });

  it("keeps a deployment-wide budget per client beside each workspace's", async () => {
    clock.advance(16 * 60_000);
    const admin = createClient(
      AdminService,
      createConnectTransport({ baseUrl: a.url, httpVersion: "1.1" }),
    );
    const key = { headers: { authorization: `Bearer ${a.bootstrapped?.adminKey}` } };
    const workspaces: string[] = [];
    for (const slug of ["spread-one", "spread-two", "spread-three"]) {
      const res = await admin.createWorkspace({ name: slug, slug }, key);
      workspaces.push(res.workspace?.id as string);
    }
    const [one, two, three] = workspaces as [string, string, string];
    // 25 per 15 minutes in all (this file's setting): ten in each of two workspaces, then five.
    for (const ws of [one, two]) {
      for (let i = 0; i < 10; i++) await wrongLogin("198.51.100.77", ws);
      expect((await wrongLogin("198.51.100.77", ws)).reason).toBe("RATE_LIMITED");
    }
    for (let i = 0; i < 5; i++) {
      expect((await wrongLogin("198.51.100.77", three)).reason).toBe("INVALID_CREDENTIALS");
    }
    // The third workspace's own budget has room for five more; the deployment's has none.
    const sixth = await wrongLogin("198.51.100.77", three);
    expect(sixth.code).toBe(Code.ResourceExhausted);
    expect(sixth.reason).toBe("RATE_LIMITED");
    expect(sixth.retryMs).toBeGreaterThan(0);
    expect((await wrongLogin("198.51.100.78", three)).reason).toBe("INVALID_CREDENTIALS");
  });
});

describe("the limits of one call", () => {
  const limiter = () =>
    new RateLimiter(a.database.pool, clock, {
      ...builtInRateLimits,
      login_ip: { limit: 3, window_seconds: 60 },
      login_account: { limit: 5, window_seconds: 60 },
    });
  const hitsOf = (key: string) =>
    a.database.pool.oneFirst(
      sql.type(z.object({ n: z.number() }))`
        SELECT coalesce(cardinality(hits), 0)::int AS n FROM rate_limits WHERE key = ${key}`,
    );
  const outcome = (p: Promise<void>) =>
    p.then(
      () => "counted",
      (e: Error) => e.constructor.name,
    );

  it("count all or nothing: a call refused by one limit spends no budget on the others", async () => {
    clock.advance(16 * 60_000);
    const l = limiter();
    const account = email("all-or-nothing");
    for (let i = 0; i < 3; i++) {
      await l.hit(null, [
        ["login_ip", "192.0.2.90"],
        ["login_account", account],
      ]);
    }
    expect(
      await outcome(
        l.hit(null, [
          ["login_ip", "192.0.2.90"],
          ["login_account", account],
        ]),
      ),
    ).toBe("RateLimitedError");
    expect(await hitsOf(`login_account:-:${account}`)).toBe(3);
    // The account's own budget is untouched by the refusal: two more from another address.
    await l.hit(null, [
      ["login_account", account],
      ["login_ip", "192.0.2.91"],
    ]);
    await l.hit(null, [
      ["login_ip", "192.0.2.92"],
      ["login_account", account],
    ]);
    expect(
      await outcome(
        l.hit(null, [
          ["login_ip", "192.0.2.93"],
          ["login_account", account],
        ]),
      ),
    ).toBe("RateLimitedError");
    expect(await hitsOf("login_ip:-:192.0.2.93")).toBe(0);
  });

  it("hold under concurrent calls naming the same keys in any order, without deadlock", async () => {
    clock.advance(16 * 60_000);
    const l = limiter();
    const account = email("concurrent-limits");
    const calls = Array.from({ length: 12 }, (_, i) =>
      outcome(
        l.hit(
          null,
          i % 2 === 0
            ? [
                ["login_ip", "192.0.2.99"],
                ["login_account", account],
              ]
            : [
                ["login_account", account],
                ["login_ip", "192.0.2.99"],
              ],
        ),
      ),
    );
    const outcomes = await Promise.all(calls);
    expect(outcomes.filter((o) => o === "counted")).toHaveLength(3);
    expect(outcomes.filter((o) => o === "RateLimitedError")).toHaveLength(9);
    expect(await hitsOf(`login_account:-:${account}`)).toBe(3);
  });
});

describe("sweeping", () => {
  it("removes rate-limit rows whose window has passed", async () => {
    const count = () =>
      a.database.pool.oneFirst(
        sql.type(z.object({ n: z.number() }))`SELECT count(*)::int AS n FROM rate_limits`,
      );
    expect(await count()).toBeGreaterThan(0);
    clock.advance(8 * 86_400_000);
    expect(await sweepRateLimits(a.database.pool, clock.now())).toBeGreaterThan(0);
    expect(await count()).toBe(0);
  });
});

describe("SECURITY.md 19: failed-login lockout", () => {
  // Each attempt from its own client address (instance A trusts the loopback proxy), so that
  // the per-IP login limit stays out of the way of the per-address lockout.
  let host = 0;
  const anyIp = () => ({ headers: { "x-forwarded-for": `192.0.2.${(++host % 250) + 1}` } });

  it("locks an address after five failures, even for the right password, without extending on attempts", async () => {
    clock.advance(16 * 60_000);
    const address = await account("lock");
    for (let i = 0; i < 5; i++) {
      expect(
        (await refused(authA.login({ email: address, password: "not it at all", workspaceId })))
          .reason,
      ).toBe("INVALID_CREDENTIALS");
    }
    const locked = await refused(
      authB.login({ email: address.toUpperCase(), password, workspaceId }),
    );
    expect(locked.code).toBe(Code.ResourceExhausted);
    expect(locked.reason).toBe("ACCOUNT_LOCKED");
    expect(locked.retryMs).toBeGreaterThan(59_000);
    expect(locked.retryMs).toBeLessThanOrEqual(60_000);
    clock.advance(30_000);
    const later = await refused(authA.login({ email: address, password, workspaceId }, anyIp()));
    expect(later.retryMs).toBeLessThanOrEqual(30_000);
    clock.advance(30_001);
    expect((await authA.login({ email: address, password, workspaceId })).result.case).toBe(
      "tokens",
    );
  });

  it("grows with repeated lockouts", async () => {
    clock.advance(16 * 60_000);
    const address = email("grow");
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 5; i++)
        await refused(authA.login({ email: address, password: "nope nope", workspaceId }));
      const locked = await refused(
        authA.login({ email: address, password: "nope nope", workspaceId }),
      );
      expect(locked.reason).toBe("ACCOUNT_LOCKED");
      expect(locked.retryMs).toBeGreaterThan(60_000 * 2 ** round - 1000);
      expect(locked.retryMs).toBeLessThanOrEqual(60_000 * 2 ** round);
      // Past the lockout and the per-account login window; the lockout count stays.
      clock.advance(16 * 60_000);
    }
  });

  it("behaves the same for an address without an account", async () => {
    clock.advance(16 * 60_000);
    const known = await account("same-known");
    const unknown = email("same-unknown");
    for (let i = 0; i < 5; i++) {
      await refused(authA.login({ email: known, password: "bad password!", workspaceId }, anyIp()));
      await refused(
        authA.login({ email: unknown, password: "bad password!", workspaceId }, anyIp()),
      );
    }
    const k = await refused(authA.login({ email: known, password, workspaceId }, anyIp()));
    const u = await refused(authA.login({ email: unknown, password, workspaceId }, anyIp()));
    expect(k.reason).toBe("ACCOUNT_LOCKED");
    expect(u).toEqual(k);
  });
});
