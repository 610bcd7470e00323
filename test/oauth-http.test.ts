import net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as client from "openid-client";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import {
  type IntrospectResponse,
  TokenIntrospectionService,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole } from "../gen/keygate/v1/types_pb.js";
import { ManualClock, systemClock } from "../src/clock.js";
import { adminKeyPrefix } from "../src/crypto/admin-key.js";
import { AdminKeyAuthenticator } from "../src/domain/admin-auth.js";
import { RateLimitedError, UnauthenticatedError } from "../src/errors.js";
import { usingExternalPostgres } from "./support/database.js";
import { type Provisioner, signedIn } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";

let keygate: TestKeygate;
let clock: ManualClock;
let rootKey: string;
let rootPrefix: string;
let defaultWorkspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let byRoot: Provisioner;
const logLines: Record<string, unknown>[] = [];

let counter = 0;
const asRoot = () => ({ headers: { authorization: `Bearer ${rootKey}` } });

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  clock = new ManualClock();
  // The issuer is configuration, so the port is chosen before the server starts.
  const port = await freePort();
  keygate = await startTestKeygate(
    {
      KEYGATE_PORT: String(port),
      KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
      // Every call's line, successful introspections included: these tests read them.
      KEYGATE_LOG_SAMPLE_EVERY: "1",
    },
    {
      clock,
      logTo: {
        write: (line: string) => {
          logLines.push(JSON.parse(line));
        },
      },
    },
  );
  rootKey = keygate.bootstrapped?.adminKey as string;
  rootPrefix = rootKey.split("_").slice(0, 2).join("_");
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  byRoot = { admin, auth, adminKey: rootKey, workspaceId: defaultWorkspaceId };
});
afterAll(async () => {
  await keygate?.stop();
});

async function workspace(tag: string) {
  const res = await admin.createWorkspace(
    { name: `Workspace ${tag}`, slug: `${tag}-${Date.now()}-${++counter}` },
    asRoot(),
  );
  return res.workspace?.id as string;
}

/** A new admin key as an OAuth client: client_id is its visible prefix. */
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
  return { clientId: res.adminKey?.prefix as string, secret: res.secret };
}

/** openid-client configured by RFC 8414 discovery against Keygate's issuer. */
async function discovered(clientId: string, secret: string, auth = client.ClientSecretBasic) {
  return client.discovery(new URL(keygate.config.issuer), clientId, undefined, auth(secret), {
    algorithm: "oauth2",
    execute: [client.allowInsecureRequests],
  });
}

/** A request as curl would send it. */
async function post(
  path: string,
  body: string,
  headers: Record<string, string> = {
    "content-type": "application/x-www-form-urlencoded",
    authorization: `Bearer ${rootKey}`,
  },
) {
  const res = await fetch(`${keygate.url}${path}`, { method: "POST", headers, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: text ? JSON.parse(text) : null };
}

const form = (params: Record<string, string>) => new URLSearchParams(params).toString();

/** An RFC 7662 introspection of a throwaway token at `baseUrl`, authenticated with `secret`. */
const introspectWith = (baseUrl: string, secret: string) =>
  fetch(`${baseUrl}/oauth2/introspect`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Bearer ${secret}`,
    },
    body: form({ token: "x" }),
  });
const basic = (id: string, secret: string) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;

describe("RFC 8414 metadata", () => {
  it("publishes the endpoints from configuration, whatever the Host header says", async () => {
    const res = await fetch(`${keygate.url}/.well-known/oauth-authorization-server`, {
      headers: { host: "evil.example", "x-forwarded-host": "evil.example" },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    const issuer = keygate.config.issuer;
    expect(await res.json()).toEqual({
      issuer,
      jwks_uri: `${issuer}/.well-known/jwks.json`,
      introspection_endpoint: `${issuer}/oauth2/introspect`,
      revocation_endpoint: `${issuer}/oauth2/revoke`,
      introspection_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
      revocation_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
      response_types_supported: [],
      grant_types_supported: [],
      token_endpoint_auth_methods_supported: [],
    });
  });

  it("is not an OpenID Provider", async () => {
    const res = await fetch(`${keygate.url}/.well-known/openid-configuration`);
    expect(res.status).toBe(404);
  });

  it("is what openid-client discovers", async () => {
    const config = await discovered(rootPrefix, rootKey);
    expect(config.serverMetadata()).toMatchObject({
      issuer: keygate.config.issuer,
      introspection_endpoint: `${keygate.config.issuer}/oauth2/introspect`,
    });
  });
});

describe("POST /oauth2/introspect through openid-client", () => {
  it("answers an active access token's claims", async () => {
    const user = await signedIn(byRoot, "active");
    const config = await discovered(rootPrefix, rootKey);
    const res = await client.tokenIntrospection(config, user.accessToken);
    expect(res).toEqual({
      active: true,
      token_type: "access_token",
      sub: user.userId,
      exp: Number(user.accessTokenExpireTime?.seconds),
      iat: expect.any(Number),
      iss: keygate.config.issuer,
      aud: [keygate.config.audience],
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      workspace_id: defaultWorkspaceId,
      sid: user.sessionId,
      role: "member",
      amr: ["pwd"],
      acr: "1",
    });
  });

  it("accepts client_secret_post as well", async () => {
    const user = await signedIn(byRoot, "post");
    const config = await discovered(rootPrefix, rootKey, client.ClientSecretPost);
    expect((await client.tokenIntrospection(config, user.accessToken)).active).toBe(true);
  });

  it("answers exactly {active: false} for an expired token", async () => {
    const user = await signedIn(byRoot, "expired");
    const config = await discovered(rootPrefix, rootKey);
    expect((await client.tokenIntrospection(config, user.accessToken)).active).toBe(true);
    clock.advance(15 * 60_000 + 1_000);
    expect(await client.tokenIntrospection(config, user.accessToken)).toEqual({ active: false });
  });

  it("answers exactly {active: false} for a revoked token", async () => {
    const user = await signedIn(byRoot, "revoked");
    const config = await discovered(rootPrefix, rootKey);
    await auth.logout({}, { headers: { authorization: `Bearer ${user.accessToken}` } });
    expect(await client.tokenIntrospection(config, user.accessToken)).toEqual({ active: false });
    expect(await client.tokenIntrospection(config, "garbage")).toEqual({ active: false });
  });

  it("shows a workspace-scoped key only its own workspace's tokens as active", async () => {
    const mine = await workspace("mine");
    const own = await signedIn(byRoot, "own", { workspaceId: mine });
    const stranger = await signedIn(byRoot, "stranger");
    const key = await keyWith({ workspaceId: mine, introspect: true });
    const config = await discovered(key.clientId, key.secret);
    expect(await client.tokenIntrospection(config, own.accessToken)).toMatchObject({
      active: true,
      workspace_id: mine,
    });
    expect(await client.tokenIntrospection(config, stranger.accessToken)).toEqual({
      active: false,
    });
    expect(
      await client.tokenIntrospection(config, stranger.refreshToken, {
        token_type_hint: "refresh_token",
      }),
    ).toEqual({ active: false });
  });

  it("SECURITY.md 6: answers a refresh token as inactive without the refresh_token hint", async () => {
    const user = await signedIn(byRoot, "refresh-no-hint");
    const config = await discovered(rootPrefix, rootKey);
    expect(await client.tokenIntrospection(config, user.refreshToken)).toEqual({ active: false });
    expect(
      await client.tokenIntrospection(config, user.refreshToken, {
        token_type_hint: "access_token",
      }),
    ).toEqual({ active: false });
    expect(
      await client.tokenIntrospection(config, user.refreshToken, { token_type_hint: "bogus" }),
    ).toEqual({ active: false });
    expect(
      (
        await client.tokenIntrospection(config, user.refreshToken, {
          token_type_hint: "refresh_token",
        })
      ).active,
    ).toBe(true);
  });

  it("introspects a refresh token with its hint", async () => {
    const user = await signedIn(byRoot, "refresh");
    const config = await discovered(rootPrefix, rootKey);
    expect(
      await client.tokenIntrospection(config, user.refreshToken, {
        token_type_hint: "refresh_token",
      }),
    ).toMatchObject({
      active: true,
      token_type: "refresh_token",
      sub: user.userId,
      sid: user.sessionId,
      workspace_id: defaultWorkspaceId,
    });
  });
});

describe("POST /oauth2/revoke through openid-client", () => {
  it("ends the session of a refresh token: Refresh fails, its access token is inactive", async () => {
    const user = await signedIn(byRoot, "revoke");
    const config = await discovered(rootPrefix, rootKey);
    await client.tokenRevocation(config, user.refreshToken, { token_type_hint: "refresh_token" });
    const refreshed = await auth.refresh({ refreshToken: user.refreshToken }).then(
      () => undefined,
      (e) => ConnectError.from(e).code,
    );
    expect(refreshed).toBe(Code.Unauthenticated);
    expect(await client.tokenIntrospection(config, user.accessToken)).toEqual({ active: false });
  });

  it("ends the session of an access token", async () => {
    const user = await signedIn(byRoot, "revoke-access");
    const config = await discovered(rootPrefix, rootKey);
    await client.tokenRevocation(config, user.accessToken);
    expect(
      await client.tokenIntrospection(config, user.refreshToken, {
        token_type_hint: "refresh_token",
      }),
    ).toEqual({ active: false });
  });

  it("answers 200 for unknown, garbage and already revoked tokens", async () => {
    const user = await signedIn(byRoot, "twice");
    const config = await discovered(rootPrefix, rootKey);
    await client.tokenRevocation(config, user.refreshToken);
    await client.tokenRevocation(config, user.refreshToken);
    await client.tokenRevocation(config, "garbage");
    await client.tokenRevocation(config, `kgr_${"A".repeat(43)}`);
    const raw = await post("/oauth2/revoke", form({ token: "garbage" }));
    expect(raw.status).toBe(200);
    expect(raw.text).toBe("");
    expect(raw.headers.get("cache-control")).toBe("no-store");
  });

  it("leaves another workspace's session alone for a workspace-scoped key", async () => {
    const key = await keyWith({ workspaceId: await workspace("elsewhere"), introspect: true });
    const bystander = await signedIn(byRoot, "bystander");
    await client.tokenRevocation(
      await discovered(key.clientId, key.secret),
      bystander.refreshToken,
    );
    const root = await discovered(rootPrefix, rootKey);
    expect((await client.tokenIntrospection(root, bystander.accessToken)).active).toBe(true);
  });
});

describe("two instances", () => {
  it("honours a revocation made over HTTP on one instance on the other within a second", async () => {
    // On PostgreSQL only LISTEN/NOTIFY can be in time; the embedded database relies on the resync.
    const peer = await startPeerKeygate(keygate, {
      KEYGATE_PORT: "0",
      KEYGATE_REVOCATION_RESYNC_MS: usingExternalPostgres ? "600000" : "200",
      KEYGATE_REVOCATION_MAX_STALENESS_MS: usingExternalPostgres ? "1200000" : "60000",
    });
    try {
      const onPeer = async (token: string) =>
        (
          await fetch(`${peer.url}/oauth2/introspect`, {
            method: "POST",
            headers: {
              "content-type": "application/x-www-form-urlencoded",
              authorization: basic(rootPrefix, rootKey),
            },
            body: form({ token }),
          })
        ).json();
      const config = await discovered(rootPrefix, rootKey);
      for (let i = 0; i < 3; i++) {
        const user = await signedIn(byRoot, `peer-${i}`);
        expect(await onPeer(user.accessToken)).toMatchObject({ active: true });
        await client.tokenRevocation(config, user.refreshToken);
        let inactive = false;
        const started = performance.now();
        while (!inactive) {
          expect(performance.now() - started).toBeLessThan(1_000);
          inactive = (await onPeer(user.accessToken)).active === false;
          if (!inactive) await new Promise((r) => setTimeout(r, 10));
        }
      }
    } finally {
      await peer.stop();
    }
  });
});

describe("one answer, every protocol", () => {
  it("answers the same through Introspect over gRPC and Connect and through HTTP", async () => {
    const user = await signedIn(byRoot, "same");
    const grpc = createClient(
      TokenIntrospectionService,
      createGrpcTransport({ baseUrl: keygate.url }),
    );
    const connect = createClient(
      TokenIntrospectionService,
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "1.1" }),
    );
    const config = await discovered(rootPrefix, rootKey);
    const rpcAsJson = (r: IntrospectResponse) =>
      r.active
        ? {
            active: true,
            token_type: r.tokenType,
            sub: r.sub,
            exp: Number(r.exp),
            iat: Number(r.iat),
            iss: r.iss,
            aud: r.aud,
            jti: r.jti,
            workspace_id: r.workspaceId,
            sid: r.sid,
            role: r.role,
            amr: r.amr,
            acr: r.acr,
          }
        : { active: false };
    for (const token of [user.accessToken, user.refreshToken, "garbage"]) {
      const overHttp = await client.tokenIntrospection(config, token);
      expect(rpcAsJson(await grpc.introspect({ token }, asRoot()))).toEqual(overHttp);
      expect(rpcAsJson(await connect.introspect({ token }, asRoot()))).toEqual(overHttp);
    }
  });
});

describe("errors, as curl would meet them", () => {
  const expectOAuthError = (
    res: Awaited<ReturnType<typeof post>>,
    status: number,
    error: string,
  ) => {
    expect(res.status).toBe(status);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(res.body).toMatchObject({ error, error_description: expect.any(String) });
    expect(Object.keys(res.body as object).sort()).toEqual(["error", "error_description"]);
  };

  it("answers 401 invalid_client with a Basic challenge for missing or bad authentication", async () => {
    const typeOnly = { "content-type": "application/x-www-form-urlencoded" };
    const wrongSecret = `${rootKey.slice(0, -4)}AAAA`;
    const cases: Record<string, string>[] = [
      typeOnly,
      { ...typeOnly, authorization: basic(rootPrefix, wrongSecret) },
      { ...typeOnly, authorization: basic("kg_someoneX", rootKey) },
      { ...typeOnly, authorization: `Bearer ${wrongSecret}` },
      { ...typeOnly, authorization: "Bearer not-a-key" },
      { ...typeOnly, authorization: "Basic !!!" },
      { ...typeOnly, authorization: `Basic ${Buffer.from("no-colon").toString("base64")}` },
      { ...typeOnly, authorization: "Digest username=x" },
    ];
    for (const path of ["/oauth2/introspect", "/oauth2/revoke"]) {
      for (const headers of cases) {
        const res = await post(path, form({ token: "x" }), headers);
        expectOAuthError(res, 401, "invalid_client");
        expect(res.headers.get("www-authenticate")).toBe('Basic realm="keygate"');
      }
    }
    // A user's access token is no client credential.
    const user = await signedIn(byRoot, "not-a-client");
    const res = await post("/oauth2/introspect", form({ token: user.accessToken }), {
      ...typeOnly,
      authorization: `Bearer ${user.accessToken}`,
    });
    expectOAuthError(res, 401, "invalid_client");
  });

  it("answers 200 to right Basic credentials sent by hand, form-urlencoded", async () => {
    const res = await post("/oauth2/introspect", form({ token: "x" }), {
      "content-type": "application/x-www-form-urlencoded; charset=UTF-8",
      authorization: basic(rootPrefix, rootKey),
    });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ active: false });
    expect(res.headers.get("cache-control")).toBe("no-store");
  });

  it("answers 403 to a key without the introspect permission", async () => {
    const key = await keyWith({ introspect: false });
    for (const path of ["/oauth2/introspect", "/oauth2/revoke"]) {
      const res = await post(path, form({ token: "x" }), {
        "content-type": "application/x-www-form-urlencoded",
        authorization: basic(key.clientId, key.secret),
      });
      expectOAuthError(res, 403, "unauthorized_client");
    }
  });

  it("answers 400 invalid_request for a missing token, a wrong content type and repeats", async () => {
    for (const path of ["/oauth2/introspect", "/oauth2/revoke"]) {
      expectOAuthError(await post(path, ""), 400, "invalid_request");
      expectOAuthError(await post(path, form({ token: "" })), 400, "invalid_request");
      expectOAuthError(
        await post(path, form({ token_type_hint: "access_token" })),
        400,
        "invalid_request",
      );
      expectOAuthError(
        await post(path, JSON.stringify({ token: "x" }), {
          "content-type": "application/json",
          authorization: `Bearer ${rootKey}`,
        }),
        400,
        "invalid_request",
      );
      expectOAuthError(await post(path, "token=a&token=b"), 400, "invalid_request");
      expectOAuthError(await post(path, form({ token: "x".repeat(8193) })), 400, "invalid_request");
      expectOAuthError(
        await post(path, form({ token: "x", client_id: rootPrefix, client_secret: rootKey })),
        400,
        "invalid_request",
      );
    }
  });

  it("answers 413 invalid_request for a body over the size limit", async () => {
    const big = form({ token: "x".repeat(keygate.config.maxRequestBytes + 1) });
    expectOAuthError(await post("/oauth2/introspect", big), 413, "invalid_request");
  });

  it("answers 405 to other methods", async () => {
    const res = await fetch(`${keygate.url}/oauth2/introspect`);
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("POST");
    expect(await res.json()).toMatchObject({ error: "invalid_request" });
    const put = await fetch(`${keygate.url}/.well-known/oauth-authorization-server`, {
      method: "POST",
    });
    expect(put.status).toBe(405);
  });

  it("writes one log line per call, without the token or the client secret", async () => {
    const user = await signedIn(byRoot, "logged");
    const before = logLines.length;
    await post("/oauth2/introspect", form({ token: user.accessToken }), {
      "content-type": "application/x-www-form-urlencoded",
      authorization: basic(rootPrefix, rootKey),
      "x-request-id": "oauth-log-test",
    });
    await post("/oauth2/revoke", form({ token: user.refreshToken }), {
      "content-type": "application/x-www-form-urlencoded",
      "x-request-id": "oauth-log-test-2",
    });
    const lines = logLines.slice(before).filter((l) => l.msg === "call");
    expect(lines).toEqual([
      expect.objectContaining({
        requestId: "oauth-log-test",
        method: "POST /oauth2/introspect",
        status: 200,
        code: "ok",
        level: "info",
      }),
      expect.objectContaining({
        requestId: "oauth-log-test-2",
        method: "POST /oauth2/revoke",
        status: 401,
        code: "invalid_client",
        level: "warn",
      }),
    ]);
    const text = JSON.stringify(logLines);
    for (const secret of [user.accessToken, user.refreshToken, rootKey]) {
      expect(text).not.toContain(secret);
    }
  });
});

describe("another configuration", () => {
  let other: TestKeygate;
  beforeAll(async () => {
    other = await startTestKeygate({
      KEYGATE_ISSUER: "https://auth.example.test/keygate",
      KEYGATE_RATE_LIMITS: JSON.stringify({ oauth_client_ip: { limit: 3, window_seconds: 600 } }),
    });
  });
  afterAll(async () => {
    await other?.stop();
  });

  it("serves the metadata of an issuer with a path where RFC 8414 puts it", async () => {
    for (const path of [
      "/.well-known/oauth-authorization-server",
      "/.well-known/oauth-authorization-server/keygate",
    ]) {
      const res = await fetch(`${other.url}${path}`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({
        issuer: "https://auth.example.test/keygate",
        jwks_uri: "https://auth.example.test/keygate/.well-known/jwks.json",
        introspection_endpoint: "https://auth.example.test/keygate/oauth2/introspect",
        revocation_endpoint: "https://auth.example.test/keygate/oauth2/revoke",
      });
    }
  });

  it("refuses client-key lookups from one address over oauth_client_ip with 429", async () => {
    const key = other.bootstrapped?.adminKey as string;
    const send = (secret: string) => introspectWith(other.url, secret);
    // Each lookup counts, the right key's as well (it is then known for a second).
    expect((await send(key)).status).toBe(200);
    const wrong = `${key.slice(0, -4)}AAAA`;
    expect((await send(wrong)).status).toBe(401);
    expect((await send(wrong)).status).toBe(401);
    const refused = await send(wrong);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await refused.json()).toMatchObject({ error: "rate_limited" });
  });
});

describe("a gateway's key under load", () => {
  let gateway: TestKeygate;
  beforeAll(async () => {
    gateway = await startTestKeygate({
      KEYGATE_RATE_LIMITS: JSON.stringify({ oauth_client_ip: { limit: 2, window_seconds: 600 } }),
    });
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it("re-checks a key in use once a second without charging oauth_client_ip", async () => {
    const key = gateway.bootstrapped?.adminKey as string;
    const send = (secret: string) =>
      introspectWith(gateway.url, secret).then(async (res) => ({
        status: res.status,
        body: await res.text(),
      }));
    // The first lookup of the key counts (1 of 2).
    expect((await send(key)).status).toBe(200);
    // After the cached second, many calls at once: one shared re-check, none of them charged.
    for (let round = 0; round < 2; round++) {
      await new Promise((r) => setTimeout(r, 1_100));
      const answers = await Promise.all(Array.from({ length: 40 }, () => send(key)));
      expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    }
    // Guessing is still limited: the second unknown key uses the last lookup, the third is refused.
    const wrong = `${key.slice(0, -4)}AAAA`;
    expect((await send(wrong)).status).toBe(401);
    expect((await send(wrong)).status).toBe(429);
  });

  it("one caller's limit is not another's, and a revocation overtakes a lookup under way", async () => {
    const { database } = gateway;
    const { secret } = await createClient(
      AdminService,
      createConnectTransport({ baseUrl: gateway.url, httpVersion: "2" }),
    ).createAdminKey(
      { name: "shared", role: AdminKeyRole.READ_ONLY, introspect: true },
      { headers: { authorization: `Bearer ${gateway.bootstrapped?.adminKey}` } },
    );
    const keys = new AdminKeyAuthenticator(database.pool, systemClock);
    // Two callers at once with a key not seen yet: the one over its limit is refused alone.
    const [limited, fine] = await Promise.allSettled([
      keys.authenticate(secret, async () => {
        throw new RateLimitedError(1_000);
      }),
      keys.authenticate(secret, async () => {}),
    ]);
    expect(limited.status === "rejected" && limited.reason).toBeInstanceOf(RateLimitedError);
    expect(fine.status === "fulfilled" && fine.value.kind).toBe("admin_key");

    // A lookup is under way when the key is revoked and the cache cleared (what RevokeAdminKey
    // does on this instance): on PostgreSQL its read sees the key live and its last_used_at
    // write waits for the revoking transaction. Its answer is not trusted: the key is looked
    // up again, and refused.
    const { secret: other } = await createClient(
      AdminService,
      createConnectTransport({ baseUrl: gateway.url, httpVersion: "2" }),
    ).createAdminKey(
      { name: "revoked while checked", role: AdminKeyRole.READ_ONLY, introspect: true },
      { headers: { authorization: `Bearer ${gateway.bootstrapped?.adminKey}` } },
    );
    const fresh = new AdminKeyAuthenticator(database.pool, systemClock);
    const revoking = new pg.Client({ connectionString: database.url });
    await revoking.connect();
    let outcome: Promise<unknown>;
    try {
      await revoking.query("BEGIN");
      await revoking.query("UPDATE admin_keys SET revoked_at = now() WHERE prefix = $1", [
        adminKeyPrefix(other),
      ]);
      outcome = fresh.authenticate(other).then(
        () => "accepted",
        (e: unknown) => e,
      );
      await new Promise((r) => setTimeout(r, 300));
      fresh.clear();
      await revoking.query("COMMIT");
    } finally {
      await revoking.end();
    }
    expect(await outcome).toBeInstanceOf(UnauthenticatedError);
  });
});
