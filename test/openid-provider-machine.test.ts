import { randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  type CryptoKey,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  SignJWT,
} from "jose";
import * as client from "openid-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole } from "../gen/keygate/v1/types_pb.js";
import { rateLimitNames } from "../src/config.js";
import {
  createVerifier,
  type KeygateRequest,
  keygateCallerKey,
  keygateClientKey,
  keygateInterceptor,
  keygateMiddleware,
  type Verifier,
  VerifyError,
} from "../src/verify/index.js";
import { usingExternalPostgres } from "./support/database.js";
import { envoyChecker } from "./support/envoy.js";
import { bearer, freePort } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { until } from "./support/wait.js";

/**
 * Machine clients of the workspaces' OpenID Providers: client_credentials with
 * client_secret_basic, client_secret_post and private_key_jwt, driven by an unmodified
 * openid-client; the refusals next to each, by hand where the wire format is the point.
 */

let keygate: TestKeygate;
let peer: TestKeygate;
let rootKey: string;
let workspaceId: string;
let otherWorkspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let introspection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;
let peerIntrospection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;
const asRoot = () => bearer(rootKey);
/** Failed client authentications this suite may make before the limit answers 429. */
const authFailureLimit = 80;

beforeAll(async () => {
  const port = await freePort();
  keygate = await startTestKeygate({
    // The embedded database has no notifications across connections: resync often there.
    ...(usingExternalPostgres ? {} : { KEYGATE_REVOCATION_RESYNC_MS: "200" }),
    KEYGATE_PORT: String(port),
    KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
    KEYGATE_RATE_LIMITS: JSON.stringify(
      Object.fromEntries(
        rateLimitNames.map((n) => [
          n,
          n === "oauth_client_auth_ip"
            ? { limit: authFailureLimit, window_seconds: 600 }
            : { limit: 100_000, window_seconds: 60 },
        ]),
      ),
    ),
  });
  peer = await startPeerKeygate(keygate, {
    KEYGATE_PORT: "0",
    ...(usingExternalPostgres ? {} : { KEYGATE_REVOCATION_RESYNC_MS: "200" }),
  });
  rootKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  introspection = createClient(TokenIntrospectionService, transport);
  peerIntrospection = createClient(
    TokenIntrospectionService,
    createConnectTransport({ baseUrl: peer.url, httpVersion: "2" }),
  );
  const other = await admin.createWorkspace({ name: "Other", slug: `other-${port}` }, asRoot());
  otherWorkspaceId = other.workspace?.id as string;
});
afterAll(async () => {
  await peer?.stop();
  await keygate?.stop();
});

const issuerOf = (id: string) => `${keygate.config.issuer}/w/${id}`;
const tokenEndpointOf = (id: string) => `${issuerOf(id)}/oauth2/token`;

async function machine(
  options: {
    workspaceId?: string;
    method?: string;
    jwks?: object;
    scopes?: string[];
    grantTypes?: string[];
  } = {},
) {
  const res = await admin.createOAuthClient(
    {
      workspaceId: options.workspaceId ?? workspaceId,
      name: "Billing worker",
      confidential: true,
      grantTypes: options.grantTypes ?? ["client_credentials"],
      tokenEndpointAuthMethod: options.method ?? "",
      jwks: options.jwks ? JSON.stringify(options.jwks) : "",
      scopes: options.scopes ?? ["orders.read", "orders.write"],
    },
    asRoot(),
  );
  return {
    clientId: res.client?.clientId as string,
    secret: res.clientSecret,
    client: res.client,
  };
}

async function keyPair(alg: "ES256" | "RS256" | "EdDSA", kid = randomUUID()) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { privateKey, kid, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

async function configFor(clientId: string, auth: client.ClientAuth, id = workspaceId) {
  return client.discovery(new URL(issuerOf(id)), clientId, undefined, auth, {
    execute: [client.allowInsecureRequests],
  });
}

/** A token request as a client library would send it, answered as JSON. */
async function tokenRequest(
  params: Record<string, string>,
  options: { basic?: [string, string]; workspace?: string } = {},
) {
  const res = await fetch(tokenEndpointOf(options.workspace ?? workspaceId), {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      ...(options.basic
        ? {
            authorization: `Basic ${Buffer.from(`${options.basic[0]}:${options.basic[1]}`).toString("base64")}`,
          }
        : {}),
    },
    body: new URLSearchParams(params),
  });
  return { status: res.status, body: (await res.json()) as Record<string, string> };
}

/** A private_key_jwt assertion, with any claim or header overridden. */
async function assertion(
  clientId: string,
  key: { privateKey: CryptoKey | Uint8Array; kid: string },
  options: {
    alg?: string;
    claims?: Record<string, unknown>;
    header?: Record<string, unknown>;
  } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    iss: clientId,
    sub: clientId,
    aud: tokenEndpointOf(workspaceId),
    jti: randomUUID(),
    iat: now,
    exp: now + 60,
    ...options.claims,
  })
    .setProtectedHeader({ alg: options.alg ?? "ES256", kid: key.kid, ...options.header })
    .sign(key.privateKey);
}

const withAssertion = (jwt: string, extra: Record<string, string> = {}) => ({
  grant_type: "client_credentials",
  client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
  client_assertion: jwt,
  ...extra,
});

async function rfc7662(token: string) {
  const res = await fetch(`${keygate.url}/oauth2/introspect`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Bearer ${rootKey}`,
    },
    body: new URLSearchParams({ token }),
  });
  return (await res.json()) as Record<string, unknown>;
}

describe("discovery", () => {
  it("advertises client_credentials, private_key_jwt and its algorithms", async () => {
    const res = await fetch(`${issuerOf(workspaceId)}/.well-known/openid-configuration`);
    const metadata = await res.json();
    expect(metadata.grant_types_supported).toEqual([
      "authorization_code",
      "refresh_token",
      "client_credentials",
    ]);
    expect(metadata.token_endpoint_auth_methods_supported).toEqual([
      "client_secret_basic",
      "client_secret_post",
      "private_key_jwt",
      "none",
    ]);
    expect(metadata.token_endpoint_auth_signing_alg_values_supported).toEqual([
      "RS256",
      "ES256",
      "EdDSA",
    ]);
  });
});

describe("client_credentials", () => {
  it("client_secret_basic: an RFC 9068 token for the client, no refresh or ID token", async () => {
    const registered = await machine();
    expect(registered.client?.redirectUris).toEqual([]);
    expect(registered.client?.grantTypes).toEqual(["client_credentials"]);
    expect(registered.client?.tokenEndpointAuthMethod).toBe("client_secret_basic");
    const config = await configFor(
      registered.clientId,
      client.ClientSecretBasic(registered.secret),
    );
    const tokens = await client.clientCredentialsGrant(config, { scope: "orders.read" });
    expect(tokens.token_type).toBe("bearer");
    expect(tokens.refresh_token).toBeUndefined();
    expect(tokens.id_token).toBeUndefined();
    expect(tokens.scope).toBe("orders.read");
    expect(tokens.expires_in).toBeGreaterThan(0);

    const header = decodeProtectedHeader(tokens.access_token);
    expect(header.typ).toBe("at+jwt");
    const { payload } = await jwtVerify(
      tokens.access_token,
      createRemoteJWKSet(new URL(`${keygate.config.issuer}/.well-known/jwks.json`)),
      // RFC 9068: iss is the issuer the client discovered, the workspace's provider.
      { issuer: issuerOf(workspaceId), audience: issuerOf(workspaceId), typ: "at+jwt" },
    );
    expect(payload).toMatchObject({
      sub: registered.clientId,
      client_id: registered.clientId,
      scope: "orders.read",
      workspace_id: workspaceId,
    });
    expect(payload.jti).toBeTypeOf("string");
    expect(payload.iat).toBeTypeOf("number");
    expect(payload.exp).toBeTypeOf("number");
    expect(payload.role).toBeUndefined();
    expect(payload.amr).toBeUndefined();

    // Without scope: every scope the client has.
    const all = await client.clientCredentialsGrant(config);
    expect(all.scope).toBe("orders.read orders.write");

    const rpc = await introspection.introspect({ token: tokens.access_token }, asRoot());
    expect(rpc).toMatchObject({
      active: true,
      clientId: registered.clientId,
      scope: "orders.read",
      sub: "",
      sid: "",
      role: "",
      workspaceId,
      tokenType: "access_token",
      aud: [issuerOf(workspaceId)],
    });
    const http = await rfc7662(tokens.access_token);
    expect(http).toMatchObject({
      active: true,
      client_id: registered.clientId,
      scope: "orders.read",
      token_type: "access_token",
    });
    expect(http.sub).toBeUndefined();
  });

  it("client_secret_post, and only the method the client registered", async () => {
    const registered = await machine({ method: "client_secret_post" });
    const config = await configFor(registered.clientId, client.ClientSecretPost(registered.secret));
    const tokens = await client.clientCredentialsGrant(config, { scope: "orders.write" });
    expect(tokens.scope).toBe("orders.write");

    const basic = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [registered.clientId, registered.secret] },
    );
    expect(basic.status).toBe(401);
    expect(basic.body.error).toBe("invalid_client");

    const basicClient = await machine();
    const posted = await tokenRequest({
      grant_type: "client_credentials",
      client_id: basicClient.clientId,
      client_secret: basicClient.secret,
    });
    expect(posted.status).toBe(401);
    expect(posted.body.error).toBe("invalid_client");
  });

  for (const alg of ["ES256", "RS256"] as const) {
    it(`private_key_jwt (${alg}) with openid-client's PrivateKeyJwt`, async () => {
      const key = await keyPair(alg);
      const registered = await machine({ method: "private_key_jwt", jwks: { keys: [key.jwk] } });
      expect(registered.secret).toBe("");
      expect(registered.client?.confidential).toBe(true);
      expect(JSON.parse(registered.client?.jwks as string).keys[0].kid).toBe(key.kid);
      const config = await configFor(
        registered.clientId,
        client.PrivateKeyJwt({ key: key.privateKey, kid: key.kid }),
      );
      const tokens = await client.clientCredentialsGrant(config, { scope: "orders.read" });
      expect(decodeJwt(tokens.access_token).sub).toBe(registered.clientId);
      const again = await client.clientCredentialsGrant(config, { scope: "orders.read" });
      expect(again.access_token).not.toBe(tokens.access_token);
    });
  }

  it("private_key_jwt (EdDSA), aud the issuer, client_id optional", async () => {
    const key = await keyPair("EdDSA");
    const registered = await machine({ method: "private_key_jwt", jwks: { keys: [key.jwk] } });
    const jwt = await assertion(registered.clientId, key, {
      alg: "EdDSA",
      claims: { aud: issuerOf(workspaceId) },
    });
    const res = await tokenRequest(withAssertion(jwt));
    expect(res.status).toBe(200);
    expect(res.body.scope).toBe("orders.read orders.write");
  });

  it("a machine token is refused by Keygate's own RPCs and by userinfo", async () => {
    const registered = await machine();
    const config = await configFor(
      registered.clientId,
      client.ClientSecretBasic(registered.secret),
    );
    const { access_token } = await client.clientCredentialsGrant(config);
    const session = await auth.getSession({}, bearer(access_token)).catch((e: unknown) => e);
    expect(ConnectError.from(session).code).toBe(Code.Unauthenticated);
    const userinfo = await fetch(`${issuerOf(workspaceId)}/oauth2/userinfo`, {
      headers: { authorization: `Bearer ${access_token}` },
    });
    expect(userinfo.status).toBe(401);
    // A workspace-scoped introspection key of another workspace sees nothing.
    const scoped = await admin.createAdminKey(
      {
        name: "other gateway",
        workspaceId: otherWorkspaceId,
        introspect: true,
        role: AdminKeyRole.READ_ONLY,
      },
      asRoot(),
    );
    const foreign = await introspection.introspect({ token: access_token }, bearer(scoped.secret));
    expect(foreign.active).toBe(false);
  });
});

describe("machine tokens for a resource (RFC 8707)", () => {
  const orders = "https://orders.example.com/api";
  const invoices = "https://invoices.example.com";
  const verifiers: Verifier[] = [];
  afterAll(() => Promise.all(verifiers.map((v) => v.close())));
  const verifierAt = async (baseUrl: string, resource: string) => {
    const verifier = createVerifier({
      baseUrl,
      adminKey: rootKey,
      resource,
      workspaceId,
      issuer: keygate.config.issuer,
    });
    verifiers.push(verifier);
    await verifier.ready();
    return verifier;
  };
  const tokenFor = async (registered: { clientId: string; secret: string }, resource: string) => {
    const config = await configFor(
      registered.clientId,
      client.ClientSecretBasic(registered.secret),
    );
    return client.clientCredentialsGrant(config, { scope: "orders.read", resource });
  };

  it("the token's aud is the resource; keygate/verify, Introspect and Envoy take it there only", async () => {
    const registered = await machine();
    const { access_token: token } = await tokenFor(registered, orders);
    const { payload } = await jwtVerify(
      token,
      createRemoteJWKSet(new URL(`${keygate.config.issuer}/.well-known/jwks.json`)),
      { issuer: issuerOf(workspaceId), audience: orders, typ: "at+jwt" },
    );
    expect(payload).toMatchObject({ aud: orders, sub: registered.clientId, scope: "orders.read" });

    const atOrders = await verifierAt(keygate.url, orders);
    expect(await atOrders.verifyUserOrClient(token)).toEqual({
      kind: "client",
      clientId: registered.clientId,
      workspaceId,
      scopes: ["orders.read"],
      expiresAt: new Date((payload.exp as number) * 1000),
    });
    // verify() answers users only; a service takes clients by asking for them.
    await expect(atOrders.verify(token)).rejects.toMatchObject({ reason: "invalid" });
    await expect(atOrders.verifyUserOrClient(token, { requireMfa: true })).rejects.toMatchObject({
      reason: "mfa_required",
    });
    const atInvoices = await verifierAt(keygate.url, invoices);
    await expect(atInvoices.verifyUserOrClient(token)).rejects.toMatchObject({
      reason: "invalid",
    });

    const here = { resource: orders, workspaceId };
    expect(await introspection.introspect({ token, ...here }, asRoot())).toMatchObject({
      active: true,
      clientId: registered.clientId,
      scope: "orders.read",
      sub: "",
      aud: [orders],
      iss: issuerOf(workspaceId),
    });
    for (const resource of [invoices, ""]) {
      const answer = await introspection.introspect({ token, resource, workspaceId }, asRoot());
      expect(answer.active, resource).toBe(false);
    }

    const envoy = envoyChecker(keygate.url, rootKey);
    // Whatever identity headers the caller sends, the upstream sees only Keygate's.
    const forged = {
      authorization: `Bearer ${token}`,
      "x-user-id": "someone-else",
      "x-role": "owner",
      "x-session-id": "s",
      "x-amr": "hwk mfa",
    };
    const route = { keygate_resource: orders, keygate_workspace_id: workspaceId };
    const atRoute = await envoy(forged, route);
    expect(atRoute.allowed).toBe(true);
    expect(atRoute.set).toEqual({
      "x-workspace-id": workspaceId,
      "x-client-id": registered.clientId,
      "x-scope": "orders.read",
    });
    expect([...atRoute.removed].sort()).toEqual(
      ["x-acr", "x-amr", "x-role", "x-session-id", "x-user-id"].sort(),
    );
    const elsewhere = await envoy(forged, { ...route, keygate_resource: invoices });
    expect(elsewhere.allowed).toBe(false);
    expect(elsewhere.grpcCode).toBe(16);
    // A route without a resource expects a user behind every request.
    expect((await envoy(forged)).allowed).toBe(false);
    // Nor does a client's token for the provider itself pass there.
    const { access_token: providerToken } = await client.clientCredentialsGrant(
      await configFor(registered.clientId, client.ClientSecretBasic(registered.secret)),
    );
    const noResource = await envoy({ authorization: `Bearer ${providerToken}` });
    expect(noResource.allowed).toBe(false);
    expect(noResource.body).toMatch(/route with a resource/);
    expect((await envoy({ authorization: `Bearer ${providerToken}` }, route)).allowed).toBe(false);
    const wrongWorkspace = await envoy(
      { authorization: `Bearer ${token}`, "x-workspace-id": otherWorkspaceId },
      route,
    );
    expect(wrongWorkspace.grpcCode).toBe(7);
  });

  it("SECURITY.md 48: another workspace's token for the same resource is refused; a question about a resource names its workspace", async () => {
    const foreign = await machine({ workspaceId: otherWorkspaceId });
    const configElsewhere = await configFor(
      foreign.clientId,
      client.ClientSecretBasic(foreign.secret),
      otherWorkspaceId,
    );
    const { access_token: token } = await client.clientCredentialsGrant(configElsewhere, {
      scope: "orders.read",
      resource: orders,
    });
    const ours = { resource: orders, workspaceId };
    expect((await introspection.introspect({ token, ...ours }, asRoot())).active).toBe(false);
    // A deployment-wide key must say which workspace; a scoped key's is its own.
    const unscoped = await introspection
      .introspect({ token, resource: orders }, asRoot())
      .catch((e: unknown) => e);
    expect(ConnectError.from(unscoped).code).toBe(Code.InvalidArgument);
    expect(ConnectError.from(unscoped).message).toMatch(/workspace_id/);
    const scoped = await admin.createAdminKey(
      { name: "orders gateway", workspaceId, introspect: true, role: AdminKeyRole.READ_ONLY },
      asRoot(),
    );
    const byScoped = await introspection.introspect(
      { token, resource: orders },
      bearer(scoped.secret),
    );
    expect(byScoped.active).toBe(false);
    const envoy = envoyChecker(keygate.url, rootKey);
    const headers = { authorization: `Bearer ${token}` };
    const pinned = { keygate_resource: orders, keygate_workspace_id: workspaceId };
    expect((await envoy(headers, pinned)).allowed).toBe(false);
    await expect(envoy(headers, { keygate_resource: orders })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
    const scopedEnvoy = envoyChecker(keygate.url, scoped.secret);
    expect((await scopedEnvoy(headers, { keygate_resource: orders })).allowed).toBe(false);
    // The token is good where it belongs.
    const theirs = { keygate_resource: orders, keygate_workspace_id: otherWorkspaceId };
    expect((await envoy(headers, theirs)).allowed).toBe(true);
  });

  it("keygate/verify's middleware and interceptor let clients through only when asked", async () => {
    const registered = await machine();
    const { access_token: token } = await tokenFor(registered, orders);
    const atOrders = await verifierAt(keygate.url, orders);
    const withClients = keygateMiddleware(atOrders, { clients: true });
    const usersOnly = keygateMiddleware(atOrders);
    const server = http.createServer((req, res) => {
      const protect = req.url === "/clients" ? withClients : usersOnly;
      protect(req, res, () => {
        const r = req as KeygateRequest;
        res.end(JSON.stringify({ user: r.keygate ?? null, client: r.keygateClient ?? null }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const headers = { authorization: `Bearer ${token}` };
      const taken = await fetch(`${base}/clients`, { headers });
      expect(taken.status).toBe(200);
      expect(await taken.json()).toMatchObject({
        user: null,
        client: { kind: "client", clientId: registered.clientId, scopes: ["orders.read"] },
      });
      const refused = await fetch(`${base}/users`, { headers });
      expect(refused.status).toBe(401);
      expect(refused.headers.get("www-authenticate")).toMatch(/resource_metadata=/);
    } finally {
      server.close();
    }

    const routes = (clients: boolean) =>
      createRouterTransport(
        ({ service }) =>
          service(AuthService, {
            getSession(_req, ctx) {
              const calling = ctx.values.get(keygateClientKey);
              if (!calling || ctx.values.get(keygateCallerKey)) throw new Error("not a client");
              return { session: { id: calling.clientId } };
            },
          }),
        { router: { interceptors: [keygateInterceptor(atOrders, { clients })] } },
      );
    const answered = await createClient(AuthService, routes(true)).getSession({}, bearer(token));
    expect(answered.session?.id).toBe(registered.clientId);
    const denied = await createClient(AuthService, routes(false))
      .getSession({}, bearer(token))
      .catch((e: unknown) => e);
    expect(ConnectError.from(denied).code).toBe(Code.Unauthenticated);
  });

  it("SECURITY.md 48: deleting the client ends its resource tokens at another instance's verifier and Envoy within a second", async () => {
    const registered = await machine();
    const { access_token: token } = await tokenFor(registered, orders);
    const atPeer = await verifierAt(peer.url, orders);
    const peerEnvoy = envoyChecker(peer.url, rootKey);
    const route = { keygate_resource: orders, keygate_workspace_id: workspaceId };
    expect((await atPeer.verifyUserOrClient(token)).kind).toBe("client");
    expect((await peerEnvoy({ authorization: `Bearer ${token}` }, route)).allowed).toBe(true);
    await admin.deleteOAuthClient({ workspaceId, clientId: registered.clientId }, asRoot());
    const verifierTook = await until(
      () =>
        atPeer.verifyUserOrClient(token).then(
          () => false,
          (error) => error instanceof VerifyError && error.reason === "revoked",
        ),
      1_000,
    );
    expect(verifierTook).toBeLessThan(1_000);
    const envoyTook = await until(
      async () => !(await peerEnvoy({ authorization: `Bearer ${token}` }, route)).allowed,
      1_000,
    );
    expect(envoyTook).toBeLessThan(1_000);
  });

  it("SECURITY.md 47: refuses resources that name Keygate, or too many, with invalid_target", async () => {
    const registered = await machine();
    const basic: [string, string] = [registered.clientId, registered.secret];
    for (const resource of [issuerOf(workspaceId), keygate.config.audience, "ftp://x.example"]) {
      const res = await tokenRequest({ grant_type: "client_credentials", resource }, { basic });
      expect(res, resource).toMatchObject({ status: 400, body: { error: "invalid_target" } });
    }
    const six = new URLSearchParams({ grant_type: "client_credentials" });
    for (let i = 0; i < 6; i++) six.append("resource", `https://r${i}.example`);
    const res = await fetch(tokenEndpointOf(workspaceId), {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from(basic.join(":")).toString("base64")}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: six,
    });
    expect(res.status).toBe(400);
    expect((await res.json()).error).toBe("invalid_target");
    const two = await tokenRequest(
      { grant_type: "client_credentials", resource: orders },
      { basic },
    );
    expect(two.status).toBe(200);
  });
});

describe("ending machine tokens", () => {
  it("SECURITY.md 48: DeleteOAuthClient: Introspect (RPC and RFC 7662) says inactive on every instance within a second", async () => {
    const registered = await machine();
    const config = await configFor(
      registered.clientId,
      client.ClientSecretBasic(registered.secret),
    );
    const { access_token } = await client.clientCredentialsGrant(config);
    expect((await peerIntrospection.introspect({ token: access_token }, asRoot())).active).toBe(
      true,
    );
    await admin.deleteOAuthClient({ workspaceId, clientId: registered.clientId }, asRoot());
    expect((await introspection.introspect({ token: access_token }, asRoot())).active).toBe(false);
    expect(await rfc7662(access_token)).toEqual({ active: false });
    const took = await until(
      async () => !(await peerIntrospection.introspect({ token: access_token }, asRoot())).active,
      1_000,
    );
    expect(took).toBeLessThan(1_000);
    const after = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [registered.clientId, registered.secret] },
    );
    expect(after.status).toBe(401);
  });

  it("RotateOAuthClientSecret: the old secret and its tokens stop, the new secret works", async () => {
    const registered = await machine();
    const oldConfig = await configFor(
      registered.clientId,
      client.ClientSecretBasic(registered.secret),
    );
    const { access_token } = await client.clientCredentialsGrant(oldConfig);
    const rotated = await admin.rotateOAuthClientSecret(
      { workspaceId, clientId: registered.clientId },
      asRoot(),
    );
    expect(rotated.clientSecret).toMatch(/^kgcs_/);
    expect((await introspection.introspect({ token: access_token }, asRoot())).active).toBe(false);
    await until(
      async () => !(await peerIntrospection.introspect({ token: access_token }, asRoot())).active,
      1_000,
    );
    const old = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [registered.clientId, registered.secret] },
    );
    expect(old).toMatchObject({ status: 401, body: { error: "invalid_client" } });
    const config = await configFor(
      registered.clientId,
      client.ClientSecretBasic(rotated.clientSecret),
    );
    const fresh = await client.clientCredentialsGrant(config);
    expect((await introspection.introspect({ token: fresh.access_token }, asRoot())).active).toBe(
      true,
    );

    const key = await keyPair("ES256");
    const keyed = await machine({ method: "private_key_jwt", jwks: { keys: [key.jwk] } });
    const refused = await admin
      .rotateOAuthClientSecret({ workspaceId, clientId: keyed.clientId }, asRoot())
      .catch((e: unknown) => e);
    expect(ConnectError.from(refused).code).toBe(Code.InvalidArgument);
    const unknown = await admin
      .rotateOAuthClientSecret({ workspaceId, clientId: "kgc_nope" }, asRoot())
      .catch((e: unknown) => e);
    expect(ConnectError.from(unknown).code).toBe(Code.NotFound);
  });
});

describe("refusals", () => {
  it("a wrong secret, an unknown client, another workspace's endpoint: invalid_client", async () => {
    const registered = await machine();
    const wrong = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [registered.clientId, "kgcs_wrong"] },
    );
    expect(wrong).toMatchObject({ status: 401, body: { error: "invalid_client" } });
    const unknown = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: ["kgc_unknown", registered.secret] },
    );
    expect(unknown).toMatchObject({ status: 401, body: { error: "invalid_client" } });
    const elsewhere = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [registered.clientId, registered.secret], workspace: otherWorkspaceId },
    );
    expect(elsewhere).toMatchObject({ status: 401, body: { error: "invalid_client" } });

    const key = await keyPair("ES256");
    const keyed = await machine({ method: "private_key_jwt", jwks: { keys: [key.jwk] } });
    const foreign = await tokenRequest(
      withAssertion(
        await assertion(keyed.clientId, key, {
          claims: { aud: tokenEndpointOf(otherWorkspaceId) },
        }),
      ),
      { workspace: otherWorkspaceId },
    );
    expect(foreign).toMatchObject({ status: 401, body: { error: "invalid_client" } });
  });

  it("a public client, or a client without the grant type: unauthorized_client", async () => {
    const refused = await admin
      .createOAuthClient(
        {
          workspaceId,
          name: "SPA",
          confidential: false,
          redirectUris: ["http://127.0.0.1:9/cb"],
          grantTypes: ["authorization_code", "client_credentials"],
        },
        asRoot(),
      )
      .catch((e: unknown) => e);
    expect(ConnectError.from(refused).code).toBe(Code.InvalidArgument);

    const spa = await admin.createOAuthClient(
      { workspaceId, name: "SPA", confidential: false, redirectUris: ["http://127.0.0.1:9/cb"] },
      asRoot(),
    );
    expect(spa.client?.tokenEndpointAuthMethod).toBe("none");
    const publicClient = await tokenRequest({
      grant_type: "client_credentials",
      client_id: spa.client?.clientId as string,
    });
    expect(publicClient).toMatchObject({ status: 400, body: { error: "unauthorized_client" } });

    const web = await admin.createOAuthClient(
      { workspaceId, name: "Web", confidential: true, redirectUris: ["http://127.0.0.1:9/cb"] },
      asRoot(),
    );
    expect(web.client?.grantTypes).toEqual(["authorization_code", "refresh_token"]);
    const webApp = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [web.client?.clientId as string, web.clientSecret] },
    );
    expect(webApp).toMatchObject({ status: 400, body: { error: "unauthorized_client" } });

    // And the other way round: a machine client has no code or refresh grant.
    const registered = await machine();
    const grants: Record<string, string>[] = [
      { grant_type: "authorization_code", code: "kgac_x", redirect_uri: "http://127.0.0.1:9/cb" },
      { grant_type: "refresh_token", refresh_token: "kgr_x" },
    ];
    for (const grant of grants) {
      const res = await tokenRequest(grant, { basic: [registered.clientId, registered.secret] });
      expect(res).toMatchObject({ status: 400, body: { error: "unauthorized_client" } });
    }
    const authorize = await fetch(
      `${issuerOf(workspaceId)}/oauth2/authorize?${new URLSearchParams({
        response_type: "code",
        client_id: registered.clientId,
        redirect_uri: "http://127.0.0.1:9/cb",
        code_challenge: "x".repeat(43),
        code_challenge_method: "S256",
        scope: "openid",
      })}`,
      { redirect: "manual" },
    );
    expect(authorize.status).toBe(400);
  });

  it("a client with both flows keeps its API scopes to itself: a user's grant has none of them", async () => {
    const both = await admin.createOAuthClient(
      {
        workspaceId,
        name: "Both",
        confidential: true,
        redirectUris: ["http://127.0.0.1:9/cb"],
        grantTypes: ["authorization_code", "refresh_token", "client_credentials"],
        scopes: ["openid", "email", "orders.read"],
      },
      asRoot(),
    );
    const authorizeWith = (scope: string) =>
      fetch(
        `${issuerOf(workspaceId)}/oauth2/authorize?${new URLSearchParams({
          response_type: "code",
          client_id: both.client?.clientId as string,
          redirect_uri: "http://127.0.0.1:9/cb",
          code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
          code_challenge_method: "S256",
          scope,
        })}`,
        { redirect: "manual" },
      );
    const refused = new URL(
      (await authorizeWith("openid orders.read")).headers.get("location") ?? "",
    );
    expect(refused.searchParams.get("error")).toBe("invalid_scope");
    const asked = new URL((await authorizeWith("openid email")).headers.get("location") ?? "");
    expect(asked.searchParams.get("error")).toBeNull();
    const own = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [both.client?.clientId as string, both.clientSecret] },
    );
    expect(own).toMatchObject({ status: 200, body: { scope: "orders.read" } });
  });

  it("a scope beyond the registration, or a user's scope: invalid_scope", async () => {
    const registered = await machine({ scopes: ["orders.read"] });
    const config = await configFor(
      registered.clientId,
      client.ClientSecretBasic(registered.secret),
    );
    for (const scope of ["orders.write", "orders.read orders.write", "openid", "offline_access"]) {
      const refused = await client
        .clientCredentialsGrant(config, { scope })
        .catch((e: unknown) => e);
      expect((refused as client.ResponseBodyError).error, scope).toBe("invalid_scope");
      expect((refused as client.ResponseBodyError).status, scope).toBe(400);
    }
  });

  it("SECURITY.md 48: assertions: replayed, alg none, HS256, wrong aud, expired, too long-lived, iss ≠ sub, an unregistered key", async () => {
    const key = await keyPair("ES256");
    const stranger = await keyPair("ES256", key.kid);
    const registered = await machine({ method: "private_key_jwt", jwks: { keys: [key.jwk] } });
    const id = registered.clientId;
    const refusedWith = async (jwt: string, extra: Record<string, string> = {}) => {
      const res = await tokenRequest(withAssertion(jwt, extra));
      expect(res.status, JSON.stringify(res.body)).toBe(401);
      expect(res.body.error).toBe("invalid_client");
      return res.body.error_description;
    };

    const once = await assertion(id, key);
    expect((await tokenRequest(withAssertion(once))).status).toBe(200);
    expect(await refusedWith(once)).toMatch(/used already/);

    const [, body] = (await assertion(id, key)).split(".");
    const none = `${Buffer.from(JSON.stringify({ alg: "none", kid: key.kid })).toString("base64url")}.${body}.`;
    await refusedWith(none);
    // HS256 keyed with the public key's own bytes, the classic algorithm confusion.
    const hmacKey = new TextEncoder().encode(JSON.stringify(key.jwk));
    await refusedWith(await assertion(id, { privateKey: hmacKey, kid: key.kid }, { alg: "HS256" }));

    await refusedWith(await assertion(id, key, { claims: { aud: "https://elsewhere.example" } }));
    const past = Math.floor(Date.now() / 1000) - 600;
    await refusedWith(await assertion(id, key, { claims: { iat: past, exp: past + 60 } }));
    const now = Math.floor(Date.now() / 1000);
    await refusedWith(await assertion(id, key, { claims: { exp: now + 3600 } }));
    await refusedWith(await assertion(id, key, { claims: { iss: "kgc_someone_else" } }));
    await refusedWith(await assertion(id, key, { claims: { jti: undefined } }));
    await refusedWith(await assertion(id, stranger));
    // A key of the client's own choosing in the header is no key of the client's.
    await refusedWith(await assertion(id, stranger, { header: { jwk: stranger.jwk } }));
    // Nor is a header that names a key honoured when the registered key signed: it is refused.
    expect(await refusedWith(await assertion(id, key, { header: { jwk: stranger.jwk } }))).toMatch(
      /header/,
    );
    expect(
      await refusedWith(await assertion(id, key, { header: { jku: "https://keys.example" } })),
    ).toMatch(/header/);
    // An assertion from the future (beyond a minute of clock skew).
    expect(
      await refusedWith(await assertion(id, key, { claims: { iat: now + 3600, exp: now + 120 } })),
    ).toMatch(/future/);
    // client_id and the assertion must name the same client.
    const otherClient = await machine();
    await refusedWith(await assertion(id, key), { client_id: otherClient.clientId });
    // A secret client cannot switch to assertions, nor an assertion client to a secret.
    const secretClient = await machine();
    await refusedWith(await assertion(secretClient.clientId, key));
    const asSecret = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [id, "kgcs_anything"] },
    );
    expect(asSecret).toMatchObject({ status: 401, body: { error: "invalid_client" } });
    // Two methods at once, or another assertion type.
    const both = await tokenRequest(withAssertion(await assertion(id, key)), {
      basic: [secretClient.clientId, secretClient.secret],
    });
    expect(both).toMatchObject({ status: 400, body: { error: "invalid_request" } });
    const saml = await tokenRequest({
      ...withAssertion(await assertion(id, key)),
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    });
    expect(saml).toMatchObject({ status: 401, body: { error: "invalid_client" } });
    const garbage = await tokenRequest(withAssertion("not.a.jwt"));
    expect(garbage).toMatchObject({ status: 401, body: { error: "invalid_client" } });
  });

  it("registration refuses what cannot work", async () => {
    const key = await keyPair("ES256");
    const { privateKey } = await generateKeyPair("ES256", { extractable: true });
    const cases: Record<string, unknown>[] = [
      { grantTypes: ["client_credentials"], redirectUris: ["http://127.0.0.1:9/cb"] },
      { grantTypes: ["refresh_token", "client_credentials"] },
      { grantTypes: ["password"] },
      { tokenEndpointAuthMethod: "private_key_jwt", jwks: "" },
      { tokenEndpointAuthMethod: "client_secret_jwt" },
      { tokenEndpointAuthMethod: "none" },
      {
        tokenEndpointAuthMethod: "private_key_jwt",
        jwks: JSON.stringify({ keys: [await exportJWK(privateKey)] }),
      },
      {
        tokenEndpointAuthMethod: "private_key_jwt",
        jwks: JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0" }] }),
      },
      {
        tokenEndpointAuthMethod: "private_key_jwt",
        jwks: JSON.stringify({ keys: [{ ...key.jwk, alg: "RS256" }] }),
      },
      {
        tokenEndpointAuthMethod: "private_key_jwt",
        jwks: JSON.stringify({ keys: [key.jwk, key.jwk] }),
      },
      { tokenEndpointAuthMethod: "private_key_jwt", jwks: "{not json" },
      { tokenEndpointAuthMethod: "client_secret_basic", jwks: JSON.stringify({ keys: [key.jwk] }) },
      { scopes: ["openid"] },
      { scopes: ["has space"] },
    ];
    for (const extra of cases) {
      const refused = await admin
        .createOAuthClient(
          {
            workspaceId,
            name: "Bad",
            confidential: true,
            grantTypes: ["client_credentials"],
            ...extra,
          },
          asRoot(),
        )
        .catch((e: unknown) => e);
      expect(ConnectError.from(refused).code, JSON.stringify(extra)).toBe(Code.InvalidArgument);
    }
  });

  it("failed client authentications are rate limited: 429 with Retry-After, never 500", async () => {
    const registered = await machine();
    let status = 0;
    let retryAfter: string | null = null;
    for (let i = 0; i < authFailureLimit + 1 && status !== 429; i++) {
      const res = await fetch(tokenEndpointOf(workspaceId), {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${Buffer.from(`${registered.clientId}:kgcs_wrong`).toString("base64")}`,
        },
        body: "grant_type=client_credentials",
      });
      status = res.status;
      retryAfter = res.headers.get("retry-after");
      expect([401, 429]).toContain(status);
    }
    expect(status).toBe(429);
    expect(Number(retryAfter)).toBeGreaterThan(0);
    // The right secret still works: successes are not what the limit counts.
    const ok = await tokenRequest(
      { grant_type: "client_credentials" },
      { basic: [registered.clientId, registered.secret] },
    );
    expect(ok.status).toBe(200);
  });
});
