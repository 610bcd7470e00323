import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import {
  type IntrospectResponse,
  TokenIntrospectionService,
  TokenTypeHint,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole, MembershipStatus, Role } from "../gen/keygate/v1/types_pb.js";
import { ManualClock } from "../src/clock.js";
import { usingExternalPostgres } from "./support/database.js";
import { failure } from "./support/failure.js";
import { type Provisioner, password, signedIn, uniqueEmail } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";
import { startTcpProxy, throughProxy } from "./support/tcp-proxy.js";
import { until } from "./support/wait.js";

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let clock: ManualClock;
let rootKey: string;
let defaultWorkspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let introspection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;
let byRoot: Provisioner;

let counter = 0;
const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const asRoot = () => as(rootKey);

beforeAll(async () => {
  clock = new ManualClock();
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({ KEYGATE_SMTP_URL: smtp.url }, { clock });
  rootKey = keygate.bootstrapped?.adminKey as string;
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  introspection = createClient(TokenIntrospectionService, transport);
  byRoot = { admin, auth, adminKey: rootKey, workspaceId: defaultWorkspaceId };
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

async function workspace(tag: string) {
  const res = await admin.createWorkspace(
    { name: `Workspace ${tag}`, slug: `${tag}-${Date.now()}-${++counter}` },
    asRoot(),
  );
  return res.workspace?.id as string;
}

async function login(email: string, workspaceId = defaultWorkspaceId) {
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  return res.result.value;
}

async function keyWith(options: { workspaceId?: string; introspect: boolean }) {
  const res = await admin.createAdminKey(
    {
      name: "gateway",
      workspaceId: options.workspaceId ?? "",
      role: AdminKeyRole.READ_ONLY,
      introspect: options.introspect,
    },
    asRoot(),
  );
  return res.secret;
}

const check = async (token: string, key = rootKey) => introspection.introspect({ token }, as(key));
const checkRefresh = async (token: string) =>
  introspection.introspect({ token, tokenTypeHint: TokenTypeHint.REFRESH_TOKEN }, asRoot());

function expectInactive(res: IntrospectResponse) {
  // RFC 7662: nothing but active=false.
  expect(res).toMatchObject({ active: false, sub: "", workspaceId: "", sid: "", jti: "" });
  expect(res.exp).toBe(0n);
  expect(res.aud).toEqual([]);
}

describe("Introspect", () => {
  it("answers an access token's claims over Connect and gRPC alike", async () => {
    const user = await signedIn(byRoot, "claims", { role: Role.ADMIN });
    const res = await check(user.accessToken);
    expect(res).toMatchObject({
      active: true,
      sub: user.userId,
      workspaceId: defaultWorkspaceId,
      sid: user.sessionId,
      role: "admin",
      iss: keygate.config.issuer,
      aud: [keygate.config.audience],
      tokenType: "access_token",
    });
    expect(res.jti).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.exp).toBe(user.accessTokenExpireTime?.seconds);
    expect(res.iat).toBeLessThan(res.exp);

    const grpc = createClient(
      TokenIntrospectionService,
      createGrpcTransport({ baseUrl: keygate.url }),
    );
    const overGrpc = await grpc.introspect({ token: user.accessToken }, asRoot());
    expect(overGrpc).toEqual(res);
  });

  it("refuses callers without an introspecting admin key", async () => {
    const user = await signedIn(byRoot, "callers");
    expect((await failure(introspection.introspect({ token: user.accessToken }))).code).toBe(
      Code.Unauthenticated,
    );
    const noPermission = await keyWith({ introspect: false });
    expect(await failure(check(user.accessToken, noPermission))).toMatchObject({
      code: Code.PermissionDenied,
      reason: "PERMISSION_DENIED",
    });
    // A user's own access token is no gateway credential.
    expect((await failure(check(user.accessToken, user.accessToken))).code).toBe(
      Code.PermissionDenied,
    );
  });

  it("refuses empty and oversized tokens and oversized batches with the field named", async () => {
    expect(await failure(check(""))).toMatchObject({
      code: Code.InvalidArgument,
      fields: ["token"],
    });
    expect(await failure(check("x".repeat(8193)))).toMatchObject({
      code: Code.InvalidArgument,
      fields: ["token"],
    });
    const many = Array.from({ length: 101 }, () => ({ token: "x" }));
    expect(await failure(introspection.introspectBatch({ tokens: many }, asRoot()))).toMatchObject({
      code: Code.InvalidArgument,
      fields: ["tokens"],
    });
    expect(
      await failure(
        introspection.introspectBatch({ tokens: [{ token: "a" }, { token: "" }] }, asRoot()),
      ),
    ).toMatchObject({ code: Code.InvalidArgument, fields: ["tokens[1].token"] });
  });

  it("answers only active=false for garbage, tampered, unsigned and foreign tokens", async () => {
    const user = await signedIn(byRoot, "forged");
    const [header, payload, signature] = user.accessToken.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
    const forgedPayload = Buffer.from(JSON.stringify({ ...claims, role: "owner" })).toString(
      "base64url",
    );
    const noneHeader = Buffer.from(JSON.stringify({ alg: "none", typ: "at+jwt" })).toString(
      "base64url",
    );
    const otherKid = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(header, "base64url").toString()), kid: "nope" }),
    ).toString("base64url");
    for (const token of [
      "garbage",
      `${header}.${forgedPayload}.${signature}`,
      `${noneHeader}.${payload}.`,
      `${otherKid}.${payload}.${signature}`,
      `${header}.${payload}.${signature.slice(0, -4)}AAAA`,
    ]) {
      expectInactive(await check(token));
    }
  });

  it("answers active=false for a token for another audience", async () => {
    const other = await startPeerKeygate(keygate, { KEYGATE_AUDIENCE: "another-api" });
    try {
      const email = uniqueEmail("audience");
      await admin.provisionUser({ email, password, workspaceId: defaultWorkspaceId }, asRoot());
      const elsewhere = createClient(
        AuthService,
        createConnectTransport({ baseUrl: other.url, httpVersion: "2" }),
      );
      const res = await elsewhere.login({ email, password, workspaceId: defaultWorkspaceId });
      if (res.result.case !== "tokens") throw new Error("no tokens");
      expectInactive(await check(res.result.value.accessToken));
    } finally {
      await other.stop();
    }
  });

  it("answers active=false once the token has expired, cached or not", async () => {
    const user = await signedIn(byRoot, "expiry");
    expect((await check(user.accessToken)).active).toBe(true);
    clock.advance(15 * 60_000 + 1_000);
    expectInactive(await check(user.accessToken));
  });

  it("sees a workspace-scoped key's own workspace only", async () => {
    const mine = await workspace("mine");
    const user = await signedIn(byRoot, "scoped", { workspaceId: mine });
    const stranger = await signedIn(byRoot, "stranger");
    const scoped = await keyWith({ workspaceId: mine, introspect: true });
    expect((await check(user.accessToken, scoped)).active).toBe(true);
    expectInactive(await check(stranger.accessToken, scoped));
    expectInactive(await check(stranger.refreshToken, scoped));
  });

  it("introspects refresh tokens: live, then rotated, then ended", async () => {
    const user = await signedIn(byRoot, "refresh");
    const live = await introspection.introspect(
      { token: user.refreshToken, tokenTypeHint: TokenTypeHint.REFRESH_TOKEN },
      asRoot(),
    );
    expect(live).toMatchObject({
      active: true,
      tokenType: "refresh_token",
      sub: user.userId,
      sid: user.sessionId,
      workspaceId: defaultWorkspaceId,
      role: "member",
    });
    const next = await auth.refresh({ refreshToken: user.refreshToken });
    const successor = next.tokens?.refreshToken as string;
    expectInactive(await checkRefresh(user.refreshToken));
    expect((await checkRefresh(successor)).active).toBe(true);
    await auth.logout({ refreshToken: successor });
    expectInactive(await checkRefresh(successor));
  });

  it("SECURITY.md 6: answers a live refresh token as inactive unless the hint asks for one", async () => {
    const user = await signedIn(byRoot, "refresh-hint");
    expectInactive(await check(user.refreshToken));
    expectInactive(
      await introspection.introspect(
        { token: user.refreshToken, tokenTypeHint: TokenTypeHint.ACCESS_TOKEN },
        asRoot(),
      ),
    );
    const batch = await introspection.introspectBatch(
      {
        tokens: [
          { token: user.refreshToken },
          { token: user.refreshToken, tokenTypeHint: TokenTypeHint.REFRESH_TOKEN },
        ],
      },
      asRoot(),
    );
    expect(batch.results.map((r) => r.active)).toEqual([false, true]);
    expect((await checkRefresh(user.refreshToken)).tokenType).toBe("refresh_token");
    // Still a live session: the hint decides the answer, not the token's state.
    expect((await auth.refresh({ refreshToken: user.refreshToken })).tokens).toBeDefined();
  });

  it("answers a batch in order", async () => {
    const user = await signedIn(byRoot, "batch");
    const res = await introspection.introspectBatch(
      {
        tokens: [
          { token: user.accessToken },
          { token: "garbage" },
          { token: user.refreshToken, tokenTypeHint: TokenTypeHint.REFRESH_TOKEN },
        ],
      },
      asRoot(),
    );
    expect(res.results.map((r) => [r.active, r.tokenType])).toEqual([
      [true, "access_token"],
      [false, ""],
      [true, "refresh_token"],
    ]);
  });
});

describe("batch size", () => {
  it("a full batch of 100 access tokens fits the default request limit, over Connect JSON and gRPC", async () => {
    const user = await signedIn(byRoot, "full-batch");
    const tokens = Array.from({ length: 100 }, () => ({ token: user.accessToken }));
    expect(JSON.stringify({ tokens }).length).toBeGreaterThan(64 * 1024);
    for (const client of [
      introspection,
      createClient(TokenIntrospectionService, createGrpcTransport({ baseUrl: keygate.url })),
    ]) {
      const res = await client.introspectBatch({ tokens }, asRoot());
      expect(res.results.filter((r) => r.active)).toHaveLength(100);
    }
  });
});

describe("revocation", () => {
  it("ends a token at once on logout, although it was cached", async () => {
    const user = await signedIn(byRoot, "logout");
    expect((await check(user.accessToken)).active).toBe(true);
    await auth.logout({}, as(user.accessToken));
    expectInactive(await check(user.accessToken));
  });

  it("ends every token of a blocked user, and unblocking does not revive them", async () => {
    const user = await signedIn(byRoot, "blocked");
    const second = await login(user.email);
    await admin.blockUser({ userId: user.userId, reason: "test" }, asRoot());
    expectInactive(await check(user.accessToken));
    expectInactive(await check(second.accessToken));
    expectInactive(await check(second.refreshToken));
    await admin.unblockUser({ userId: user.userId }, asRoot());
    expectInactive(await check(user.accessToken));
    // A fresh login right after is alive: it is issued after the cut-off.
    expect((await check((await login(user.email)).accessToken)).active).toBe(true);
  });

  it("ends a member's tokens when the membership is disabled or removed", async () => {
    const ws = await workspace("members");
    const disabled = await signedIn(byRoot, "disabled", { workspaceId: ws });
    const removed = await signedIn(byRoot, "removed", { workspaceId: ws });
    await admin.updateMember(
      { workspaceId: ws, userId: disabled.userId, status: MembershipStatus.DISABLED },
      asRoot(),
    );
    await admin.removeMember({ workspaceId: ws, userId: removed.userId }, asRoot());
    expectInactive(await check(disabled.accessToken));
    expectInactive(await check(removed.accessToken));
  });

  it("ends tokens that carry an old role; the refreshed token carries the new one", async () => {
    const user = await signedIn(byRoot, "promoted");
    expect((await check(user.accessToken)).role).toBe("member");
    await admin.updateMember(
      { workspaceId: defaultWorkspaceId, userId: user.userId, role: Role.ADMIN },
      asRoot(),
    );
    expectInactive(await check(user.accessToken));
    const refreshed = await auth.refresh({ refreshToken: user.refreshToken });
    expect(await check(refreshed.tokens?.accessToken as string)).toMatchObject({
      active: true,
      role: "admin",
      sid: user.sessionId,
    });
  });

  it("ends the other sessions on a password change and every token of a deleted workspace", async () => {
    const ws = await workspace("doomed");
    const user = await signedIn(byRoot, "changer", { workspaceId: ws });
    const other = await login(user.email, ws);
    await auth.changePassword(
      { currentPassword: password, newPassword: `${password} again` },
      { headers: { authorization: `Bearer ${user.accessToken}` } },
    );
    expectInactive(await check(other.accessToken));
    expect((await check(user.accessToken)).active).toBe(true);
    await admin.deleteWorkspace({ workspaceId: ws }, asRoot());
    expectInactive(await check(user.accessToken));
  });

  it("RevokeToken ends the session of a refresh or access token, RFC 7009 style", async () => {
    const byRefresh = await signedIn(byRoot, "revoke-refresh");
    await introspection.revokeToken(
      { token: byRefresh.refreshToken, tokenTypeHint: TokenTypeHint.REFRESH_TOKEN },
      asRoot(),
    );
    expectInactive(await check(byRefresh.accessToken));
    expect((await failure(auth.refresh({ refreshToken: byRefresh.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );

    const byAccess = await signedIn(byRoot, "revoke-access");
    await introspection.revokeToken({ token: byAccess.accessToken }, asRoot());
    expectInactive(await check(byAccess.refreshToken));

    // Unknown, garbage and already revoked tokens answer success all the same.
    await introspection.revokeToken({ token: "garbage" }, asRoot());
    await introspection.revokeToken({ token: `kgr_${"A".repeat(43)}` }, asRoot());
    await introspection.revokeToken({ token: byAccess.accessToken }, asRoot());

    // A workspace-scoped key cannot end another workspace's session.
    const scoped = await keyWith({ workspaceId: await workspace("elsewhere"), introspect: true });
    const bystander = await signedIn(byRoot, "bystander");
    await introspection.revokeToken({ token: bystander.refreshToken }, as(scoped));
    expect((await check(bystander.accessToken)).active).toBe(true);
    expect((await failure(introspection.revokeToken({ token: "" }, asRoot()))).fields).toEqual([
      "token",
    ]);
  });
});

describe("two instances", () => {
  it("honours a revocation made through one instance on the other within a second", async () => {
    // On PostgreSQL the resync is ten minutes away, so only LISTEN/NOTIFY can be in time; the
    // embedded database has no notifications across connections and relies on the resync.
    const peer = await startPeerKeygate(keygate, {
      KEYGATE_REVOCATION_RESYNC_MS: usingExternalPostgres ? "600000" : "200",
      KEYGATE_REVOCATION_MAX_STALENESS_MS: usingExternalPostgres ? "1200000" : "60000",
    });
    try {
      const onPeer = createClient(
        TokenIntrospectionService,
        createConnectTransport({ baseUrl: peer.url, httpVersion: "2" }),
      );
      for (let i = 0; i < 3; i++) {
        const user = await signedIn(byRoot, `peer-${i}`);
        expect((await onPeer.introspect({ token: user.accessToken }, asRoot())).active).toBe(true);
        await auth.logout({}, as(user.accessToken));
        await until(
          async () => !(await onPeer.introspect({ token: user.accessToken }, asRoot())).active,
          1_000,
        );
      }
    } finally {
      await peer.stop();
    }
  });

  it.runIf(usingExternalPostgres)(
    "heals a lost listener connection by polling and listening again",
    async () => {
      const peer = await startPeerKeygate(keygate, {
        KEYGATE_REVOCATION_RESYNC_MS: "600000",
        KEYGATE_REVOCATION_MAX_STALENESS_MS: "1200000",
      });
      try {
        const onPeer = createClient(
          TokenIntrospectionService,
          createConnectTransport({ baseUrl: peer.url, httpVersion: "2" }),
        );
        const { pool } = keygate.database;
        const { sql } = await import("../src/db/sql.js");
        const killed = await pool.anyFirst(sql.unsafe`
          SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%'`);
        expect(killed.length).toBeGreaterThanOrEqual(1);
        const user = await signedIn(byRoot, "unheard");
        await auth.logout({}, as(user.accessToken));
        await until(
          async () => !(await onPeer.introspect({ token: user.accessToken }, asRoot())).active,
          1_000,
        );
      } finally {
        await peer.stop();
      }
    },
  );

  it("answers UNAVAILABLE, never active, while the database is out of reach", async () => {
    const proxy = await startTcpProxy({
      host: "127.0.0.1",
      port: Number(new URL(keygate.database.url).port),
    });
    const peer = await startPeerKeygate(keygate, {
      DATABASE_URL: throughProxy(keygate.database.url, proxy.port),
      KEYGATE_REVOCATION_RESYNC_MS: "100",
      KEYGATE_REVOCATION_MAX_STALENESS_MS: "500",
    });
    try {
      const onPeer = createClient(
        TokenIntrospectionService,
        createConnectTransport({ baseUrl: peer.url, httpVersion: "2" }),
      );
      const user = await signedIn(byRoot, "partitioned");
      expect((await onPeer.introspect({ token: user.accessToken }, asRoot())).active).toBe(true);
      await proxy.cut();
      await auth.logout({}, as(user.accessToken));
      // The peer cannot learn of the logout: once its state is stale it must refuse to answer.
      await until(async () => {
        const outcome = await onPeer.introspect({ token: user.accessToken }, asRoot()).then(
          () => "answered" as const,
          (e) => ConnectError.from(e).code,
        );
        return outcome === Code.Unavailable;
      }, 5_000);
      await proxy.restore();
      await until(async () => {
        const res = await onPeer
          .introspect({ token: user.accessToken }, asRoot())
          .catch(() => undefined);
        return res !== undefined && !res.active;
      }, 10_000);
    } finally {
      await peer.stop();
      await proxy.stop();
    }
  });
});
