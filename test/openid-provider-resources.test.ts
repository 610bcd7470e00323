import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { decodeJwt } from "jose";
import * as client from "openid-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OAuthService } from "../gen/keygate/v1/oauth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole } from "../gen/keygate/v1/types_pb.js";
import { withTenant } from "../src/db/with-tenant.js";
import { maxDynamicClients } from "../src/domain/oauth/registration.js";
import { insertOAuthClient } from "../src/repositories/oauth-clients.js";
import { createVerifier, type Verifier, VerifyError } from "../src/verify/index.js";
import { CookieBrowser } from "./support/cookie-browser.js";
import { envoyChecker } from "./support/envoy.js";
import { bearer, freePort, uniqueEmail } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { until } from "./support/wait.js";

/**
 * RFC 8707 resource indicators, RFC 9728 resource metadata through keygate/verify, and RFC
 * 7591 dynamic registration, with an unmodified openid-client as the client. The MCP client
 * of test/openid-provider-mcp.test.ts goes through the same doors.
 */

let keygate: TestKeygate;
let rootKey: string;
let workspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let oauth: ReturnType<typeof createClient<typeof OAuthService>>;
let introspection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;
const password = "correct horse battery staple";
const redirectUri = "http://127.0.0.1:9/callback";
const calendar = "https://calendar.example.com/api";
const payroll = "https://payroll.example.com";
const asRoot = () => bearer(rootKey);
const verifiers: Verifier[] = [];

beforeAll(async () => {
  const port = await freePort();
  keygate = await startTestKeygate({
    KEYGATE_PORT: String(port),
    KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
  });
  rootKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  oauth = createClient(OAuthService, transport);
  introspection = createClient(TokenIntrospectionService, transport);
});
afterAll(async () => {
  await Promise.all(verifiers.map((v) => v.close()));
  await keygate?.stop();
});

const issuerOf = (id: string) => `${keygate.config.issuer}/w/${id}`;

function verifierFor(resource: string, workspace = workspaceId) {
  const verifier = createVerifier({
    baseUrl: keygate.url,
    adminKey: rootKey,
    resource,
    workspaceId: workspace,
    issuer: keygate.config.issuer,
  });
  verifiers.push(verifier);
  return verifier;
}

async function user() {
  const email = uniqueEmail("resource-user");
  await admin.provisionUser({ email, password, workspaceId, emailVerified: true }, asRoot());
  return email;
}

async function firstPartyClient() {
  const res = await admin.createOAuthClient(
    {
      workspaceId,
      name: "Calendar app",
      redirectUris: [redirectUri],
      confidential: true,
      firstParty: true,
    },
    asRoot(),
  );
  const config = await client.discovery(
    new URL(issuerOf(workspaceId)),
    res.client?.clientId as string,
    undefined,
    client.ClientSecretBasic(res.clientSecret),
    { execute: [client.allowInsecureRequests] },
  );
  secrets.set(config, res.clientSecret);
  return config;
}
const secrets = new WeakMap<client.Configuration, string>();

/** Authorize (with the extra parameters), sign in on the page's RPCs, accept, come back. */
async function grant(
  config: client.Configuration,
  email: string,
  parameters: Record<string, string | string[]>,
) {
  const browser = new CookieBrowser();
  const verifier = client.randomPKCECodeVerifier();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: "openid",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
  });
  for (const [name, value] of Object.entries(parameters)) {
    url.searchParams.delete(name);
    for (const v of [value].flat()) url.searchParams.append(name, v);
  }
  const first = await browser.get(url.toString());
  const location = new URL(first.headers.get("location") as string);
  const requestId = location.searchParams.get("request");
  if (requestId === null) return { refused: location, requestId: null } as const;
  const login = await auth.login({ email, password, workspaceId });
  if (login.result.case !== "tokens") throw new Error("no tokens");
  const { request } = await oauth.getAuthorizationRequest({ requestId });
  const { redirectTo } = await oauth.acceptAuthorizationRequest(
    { requestId },
    bearer(login.result.value.accessToken),
  );
  const back = await browser.get(redirectTo);
  const callback = new URL(back.headers.get("location") as string);
  return { callback, verifier, request, requestId } as const;
}

/** The code of a granted flow exchanged, naming one resource at the token endpoint. */
function exchangeFor(
  config: client.Configuration,
  flow: { callback: URL; verifier: string },
  resource: string,
) {
  return client.authorizationCodeGrant(
    config,
    flow.callback,
    { pkceCodeVerifier: flow.verifier, idTokenExpected: false },
    { resource },
  );
}

async function tokenRequest(config: client.Configuration, body: URLSearchParams) {
  const meta = config.serverMetadata();
  const info = config.clientMetadata();
  return fetch(meta.token_endpoint as string, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${Buffer.from(`${info.client_id}:${secrets.get(config)}`).toString("base64")}`,
    },
    body,
  });
}

describe("RFC 8707 resource indicators", () => {
  it("SECURITY.md 47: a token granted for a resource is that resource's alone", async () => {
    const config = await firstPartyClient();
    const email = await user();
    const flow = await grant(config, email, { resource: calendar, scope: "offline_access" });
    if (flow.requestId === null) throw new Error(`refused: ${flow.refused}`);
    expect(flow.request?.resources).toEqual([calendar]);
    const tokens = await exchangeFor(config, flow, calendar);
    const claims = decodeJwt(tokens.access_token);
    // RFC 9068: iss is the provider's issuer, aud the resource.
    expect(claims.iss).toBe(issuerOf(workspaceId));
    expect(claims.aud).toBe(calendar);
    expect(claims.client_id).toBe(config.clientMetadata().client_id);

    const atCalendar = verifierFor(calendar);
    const atPayroll = verifierFor(payroll);
    await Promise.all([atCalendar.ready(), atPayroll.ready()]);
    const caller = await atCalendar.verify(tokens.access_token);
    expect(caller.clientId).toBe(config.clientMetadata().client_id);
    expect(caller.scopes).toEqual(["offline_access"]);
    await expect(atPayroll.verify(tokens.access_token)).rejects.toMatchObject({
      reason: "invalid",
    });
    // Nor does it pass for a Keygate session: not at the RPCs, not at Introspect, not at the
    // provider's userinfo (no openid, so no provider audience).
    await expect(auth.getSession({}, bearer(tokens.access_token))).rejects.toMatchObject({
      code: 16,
    });
    const introspected = await introspection.introspect({ token: tokens.access_token }, asRoot());
    expect(introspected.active).toBe(false);
    const info = await fetch(`${issuerOf(workspaceId)}/oauth2/userinfo`, {
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    expect(info.status).toBe(401);

    // A refresh may narrow to the granted resource, never widen past it; a refused one
    // rotates nothing.
    const widened = await tokenRequest(
      config,
      new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: tokens.refresh_token as string,
        resource: payroll,
      }),
    );
    expect(widened.status).toBe(400);
    expect((await widened.json()).error).toBe("invalid_target");
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token as string, {
      resource: calendar,
    });
    expect(decodeJwt(refreshed.access_token).aud).toBe(calendar);
    await atCalendar.verify(refreshed.access_token);

    // Ending the grant reaches the resource's verifier through the revocation feed.
    await admin.revokeUserSessions({ workspaceId, userId: claims.sub as string }, asRoot());
    const tookMs = await until(
      () =>
        atCalendar.verify(refreshed.access_token).then(
          () => false,
          (error) => error instanceof VerifyError && error.reason === "revoked",
        ),
      1_000,
    );
    expect(tookMs).toBeLessThan(1_000);
  });

  it("SECURITY.md 47: a gateway asks about its resource: Introspect (RPC, RFC 7662) and Envoy answer for that resource only", async () => {
    const config = await firstPartyClient();
    const email = await user();
    const flow = await grant(config, email, { resource: calendar, scope: "offline_access" });
    if (flow.requestId === null) throw new Error(`refused: ${flow.refused}`);
    const tokens = await exchangeFor(config, flow, calendar);
    const token = tokens.access_token;
    const clientId = config.clientMetadata().client_id;
    const sub = decodeJwt(token).sub as string;

    // The calendar's gateway holds a key scoped to the workspace, whose tokens it takes.
    const gateway = (
      await admin.createAdminKey(
        { name: "calendar gateway", workspaceId, introspect: true, role: AdminKeyRole.READ_ONLY },
        asRoot(),
      )
    ).secret;
    const rpc = await introspection.introspect({ token, resource: calendar }, bearer(gateway));
    expect(rpc).toMatchObject({
      active: true,
      sub,
      clientId,
      scope: "offline_access",
      iss: issuerOf(workspaceId),
      aud: [calendar],
      role: "member",
    });
    for (const other of [payroll, `${calendar}/`, ""]) {
      const answer = await introspection.introspect(
        { token, resource: other, workspaceId },
        asRoot(),
      );
      expect(answer.active, other).toBe(false);
    }
    const form = async (body: Record<string, string>) => {
      const res = await fetch(`${keygate.url}/oauth2/introspect`, {
        method: "POST",
        headers: { authorization: `Bearer ${gateway}` },
        body: new URLSearchParams(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    expect((await form({ token, resource: calendar })).body).toMatchObject({
      active: true,
      sub,
      client_id: clientId,
      scope: "offline_access",
    });
    expect((await form({ token, resource: payroll })).body).toEqual({ active: false });
    // A refresh token is never for a resource, whatever the hint.
    const refresh = await form({
      token: tokens.refresh_token as string,
      token_type_hint: "refresh_token",
      resource: calendar,
    });
    expect(refresh.body).toEqual({ active: false });
    // Keygate itself is no resource, and the field says what is wrong.
    for (const resource of [keygate.config.audience, issuerOf(workspaceId), "not a uri"]) {
      const refused = await introspection
        .introspect({ token, resource }, bearer(gateway))
        .catch((e: unknown) => e);
      expect(refused, resource).toMatchObject({ code: 3 });
      expect(String(refused), resource).toMatch(/resource/);
      expect((await form({ token, resource })).body.error, resource).toBe("invalid_request");
    }

    const envoy = envoyChecker(keygate.url, gateway);
    const spoofed = { authorization: `Bearer ${token}`, "x-client-id": "kgc_forged" };
    const atCalendar = await envoy(spoofed, { keygate_resource: calendar });
    expect(atCalendar.allowed).toBe(true);
    expect(atCalendar.set).toEqual({
      "x-user-id": sub,
      "x-workspace-id": workspaceId,
      "x-session-id": decodeJwt(token).sid,
      "x-role": "member",
      "x-amr": "pwd",
      "x-acr": "1",
      "x-client-id": clientId,
      "x-scope": "offline_access",
    });
    expect(atCalendar.removed).toEqual([]);
    expect((await envoy(spoofed, { keygate_resource: payroll })).allowed).toBe(false);
    // A route without a resource takes Keygate's own sessions' tokens only.
    expect((await envoy(spoofed)).allowed).toBe(false);
    const login = await auth.login({ email, password, workspaceId });
    if (login.result.case !== "tokens") throw new Error("no tokens");
    const own = { authorization: `Bearer ${login.result.value.accessToken}` };
    expect((await envoy(own, { keygate_resource: calendar })).allowed).toBe(false);
    // A route pinned to a workspace takes that workspace's tokens only, resource or not.
    const elsewhere = { keygate_workspace_id: crypto.randomUUID() };
    expect((await envoy(own, elsewhere)).allowed).toBe(false);
    expect((await envoy(own, { keygate_workspace_id: workspaceId })).allowed).toBe(true);
    const pinned = await introspection.introspect(
      { token: login.result.value.accessToken, workspaceId: crypto.randomUUID() },
      asRoot(),
    );
    expect(pinned.active).toBe(false);
    await expect(
      introspection.introspect(
        { token: login.result.value.accessToken, workspaceId: "junk" },
        asRoot(),
      ),
    ).rejects.toMatchObject({ code: 3 });
    const plain = await envoy({ ...own, "x-client-id": "kgc_forged", "x-scope": "admin" });
    expect(plain.allowed).toBe(true);
    expect(plain.set["x-client-id"]).toBeUndefined();
    expect(plain.removed).toEqual(["x-client-id", "x-scope"]);
  });

  it("with openid the token also reaches userinfo; several resources are each in aud", async () => {
    const config = await firstPartyClient();
    const email = await user();
    const flow = await grant(config, email, { resource: [calendar, payroll] });
    if (flow.requestId === null) throw new Error(`refused: ${flow.refused}`);
    const tokens = await client.authorizationCodeGrant(config, flow.callback, {
      pkceCodeVerifier: flow.verifier,
      idTokenExpected: true,
    });
    expect(decodeJwt(tokens.access_token).aud).toEqual([calendar, payroll, issuerOf(workspaceId)]);
    const info = await client.fetchUserInfo(config, tokens.access_token, client.skipSubjectCheck);
    expect(info.sub).toBe(decodeJwt(tokens.access_token).sub);
    const atPayroll = verifierFor(payroll);
    await atPayroll.ready();
    await atPayroll.verify(tokens.access_token);
  });

  it("a code exchange may narrow to one resource; a refresh may still ask for any of the grant's", async () => {
    const config = await firstPartyClient();
    const flow = await grant(config, await user(), {
      resource: [calendar, payroll],
      scope: "offline_access",
    });
    if (flow.requestId === null) throw new Error(`refused: ${flow.refused}`);
    const tokens = await exchangeFor(config, flow, calendar);
    expect(decodeJwt(tokens.access_token).aud).toBe(calendar);
    const forPayroll = await client.refreshTokenGrant(config, tokens.refresh_token as string, {
      resource: payroll,
    });
    expect(decodeJwt(forPayroll.access_token).aud).toBe(payroll);
    const forBoth = await client.refreshTokenGrant(config, forPayroll.refresh_token as string);
    expect(decodeJwt(forBoth.access_token).aud).toEqual([calendar, payroll]);
  });

  it("a code exchange may not name a resource outside the authorization", async () => {
    const config = await firstPartyClient();
    const flow = await grant(config, await user(), { resource: calendar });
    if (flow.requestId === null) throw new Error(`refused: ${flow.refused}`);
    const res = await tokenRequest(
      config,
      new URLSearchParams({
        grant_type: "authorization_code",
        code: flow.callback.searchParams.get("code") as string,
        redirect_uri: redirectUri,
        code_verifier: flow.verifier,
        resource: payroll,
      }),
    );
    expect(res.status).toBe(400);
    expect((await res.json()).error).toBe("invalid_target");
  });

  it("SECURITY.md 47: refuses resources that are not absolute https URIs, or that name Keygate itself", async () => {
    const config = await firstPartyClient();
    const email = await user();
    for (const resource of [
      "calendar",
      "http://calendar.example.com",
      "https://calendar.example.com/#top",
      "https://user:pw@calendar.example.com",
      keygate.config.audience,
      issuerOf(workspaceId),
      `${keygate.config.issuer}/w/00000000-0000-4000-8000-000000000000`,
      `${keygate.config.issuer}/`,
      // Other spellings of Keygate's own origin.
      keygate.config.issuer.replace("http://", "HTTP://"),
      keygate.config.issuer.replace("127.0.0.1", "localhost"),
      keygate.config.issuer.replace(/:(\d+)$/, ":0$1"),
      `${keygate.config.issuer}/x/../w/${workspaceId}`,
      `${keygate.config.issuer}//w/${workspaceId}`,
      `${keygate.config.issuer}/api`,
      // Not written as URIs: spaces, controls, line breaks and direction marks would reach the
      // consent screen as they are; and schemes without their authority.
      " https://calendar.example.com/api",
      "https://calendar.example.com/a\tpi",
      "https://calendar.example.com/\r\n\r\nAllow full access",
      "https://calendar.example.com/\u202emoc.elpmaxe",
      "https://calendar.example.com/\u00e9",
      "https:calendar.example.com/api",
      "https:///api",
      "https://:@calendar.example.com/api",
      "https://@calendar.example.com/api",
      "https://calendar.example.com\\@evil.example/",
      "https://calendar.example.com/%",
    ]) {
      const flow = await grant(config, email, { resource });
      expect(flow.requestId, resource).toBeNull();
      if (flow.requestId === null) {
        expect(flow.refused.searchParams.get("error"), resource).toBe("invalid_target");
      }
    }
    const six = Array.from({ length: 6 }, (_, i) => `https://r${i}.example.com`);
    const flow = await grant(config, email, { resource: six });
    expect(flow.requestId).toBeNull();
    // Five long ones would make a token longer than Introspect reads: 2,048 characters in all.
    const long = Array.from(
      { length: 2 },
      (_, i) => `https://r${i}.example.com/${"a".repeat(1020)}`,
    );
    const tooLong = await grant(config, email, { resource: long });
    expect(tooLong.refused?.searchParams.get("error_description")).toMatch(/2048/);
    expect((await grant(config, email, { resource: long.slice(0, 1) })).requestId).not.toBeNull();
  });

  it("SECURITY.md 47: keygate/verify is not built for a resource no token can be issued for", async () => {
    for (const resource of [
      issuerOf(workspaceId),
      `${keygate.config.issuer}/api`,
      "keygate",
      "https://calendar.example.com/ api",
    ]) {
      expect(() => verifierFor(resource), resource).toThrow(TypeError);
    }
  });

  it("keygate/verify without a resource refuses every client token", async () => {
    const config = await firstPartyClient();
    const flow = await grant(config, await user(), { resource: calendar });
    if (flow.requestId === null) throw new Error(`refused: ${flow.refused}`);
    const tokens = await client.authorizationCodeGrant(config, flow.callback, {
      pkceCodeVerifier: flow.verifier,
      idTokenExpected: true,
    });
    const own = createVerifier({
      baseUrl: keygate.url,
      adminKey: rootKey,
      audience: keygate.config.audience,
      issuer: keygate.config.issuer,
    });
    verifiers.push(own);
    await own.ready();
    await expect(own.verify(tokens.access_token)).rejects.toMatchObject({ reason: "invalid" });
  });
});

describe("RFC 7591 dynamic registration", () => {
  const register = (id: string, body: unknown, type = "application/json") =>
    fetch(`${issuerOf(id)}/oauth2/register`, {
      method: "POST",
      headers: { "content-type": type },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  /** A new workspace that allows dynamic registration. */
  const openForRegistration = async (name: string) => {
    const created = await admin.createWorkspace(
      { name, slug: `${name.toLowerCase().replace(/\W+/g, "-")}-${Date.now()}` },
      asRoot(),
    );
    const id = created.workspace?.id as string;
    await admin.updateWorkspaceSettings(
      { workspaceId: id, settings: { oauthDynamicRegistration: true } },
      asRoot(),
    );
    return id;
  };
  const discovery = async (id: string) =>
    (await fetch(`${issuerOf(id)}/.well-known/openid-configuration`)).json();

  it("SECURITY.md 47: is off until the workspace allows it; then a client registers and needs consent", async () => {
    const created = await admin.createWorkspace(
      { name: "Registration", slug: `reg-${Date.now()}` },
      asRoot(),
    );
    const id = created.workspace?.id as string;
    const metadata = { redirect_uris: [redirectUri], client_name: "Keygate Admin" };
    expect((await discovery(id)).registration_endpoint).toBeUndefined();
    const off = await register(id, metadata);
    expect(off.status).toBe(403);
    expect((await off.json()).error).toBe("access_denied");

    await admin.updateWorkspaceSettings(
      { workspaceId: id, settings: { oauthDynamicRegistration: true } },
      asRoot(),
    );
    expect((await discovery(id)).registration_endpoint).toBe(`${issuerOf(id)}/oauth2/register`);
    const res = await register(id, { ...metadata, token_endpoint_auth_method: "none" });
    expect(res.status).toBe(201);
    const registered = await res.json();
    expect(registered).toMatchObject({
      client_name: "Keygate Admin",
      redirect_uris: [redirectUri],
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code", "refresh_token"],
    });
    expect(registered.client_secret).toBeUndefined();

    // Its name is its own claim: the sign-in page is told so, and it never skips consent.
    const email = uniqueEmail("registered");
    await admin.provisionUser({ email, password, workspaceId: id, emailVerified: true }, asRoot());
    const config = await client.discovery(
      new URL(issuerOf(id)),
      registered.client_id,
      undefined,
      client.None(),
      { execute: [client.allowInsecureRequests] },
    );
    const verifier = client.randomPKCECodeVerifier();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: "openid",
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
    });
    const first = await new CookieBrowser().get(url.toString());
    const requestId = new URL(first.headers.get("location") as string).searchParams.get(
      "request",
    ) as string;
    const { request } = await oauth.getAuthorizationRequest({ requestId });
    expect(request?.clientRegisteredDynamically).toBe(true);
    expect(request?.needsConsent).toBe(true);

    // A confidential registration gets its secret once; the admins see the client.
    const confidential = await (await register(id, metadata)).json();
    expect(confidential.token_endpoint_auth_method).toBe("client_secret_basic");
    expect(confidential.client_secret).toMatch(/^kgcs_|^kg/);
    const listed = await admin.listOAuthClients({ workspaceId: id }, asRoot());
    expect(listed.clients.map((c) => c.clientId)).toEqual(
      expect.arrayContaining([registered.client_id, confidential.client_id]),
    );
    expect(
      listed.clients.find((c) => c.clientId === registered.client_id)?.registeredDynamically,
    ).toBe(true);
    expect(confidential.grant_types).toEqual(["authorization_code", "refresh_token"]);
    // Registered in one workspace, unknown in every other.
    const elsewhere = await fetch(
      `${issuerOf(workspaceId)}/oauth2/authorize?${url.searchParams.toString()}`,
      { redirect: "manual" },
    );
    expect(elsewhere.status).toBe(400);
  });

  it("SECURITY.md 47: a workspace holds at most 1,000 self-registered clients, however many register at once", async () => {
    const id = await openForRegistration("Crowded");
    // 997 registered earlier (written as registration writes them), room for three more.
    await withTenant(keygate.database.pool, id, async (tx) => {
      for (let i = 0; i < maxDynamicClients - 3; i++) {
        await insertOAuthClient(tx, {
          workspaceId: id,
          clientId: `kgc_earlier_${i}`,
          name: `Earlier ${i}`,
          secretHash: null,
          redirectUris: [redirectUri],
          postLogoutRedirectUris: [],
          firstParty: false,
          scopes: ["openid"],
          backchannelLogoutUri: null,
          registeredDynamically: true,
          grantTypes: ["authorization_code", "refresh_token"],
          tokenEndpointAuthMethod: "none",
          jwks: null,
          now: new Date(),
        });
      }
    });
    const metadata = {
      redirect_uris: [redirectUri],
      client_name: "One of many",
      token_endpoint_auth_method: "none",
    };
    const answers = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const res = await register(id, metadata);
        return { status: res.status, body: await res.json() };
      }),
    );
    expect(answers.filter((a) => a.status === 201)).toHaveLength(3);
    const refused = answers.filter((a) => a.status !== 201);
    expect(refused).toHaveLength(5);
    for (const r of refused) {
      expect(r).toMatchObject({ status: 403, body: { error: "access_denied" } });
      expect(r.body.error_description).toMatch(/as many self-registered clients/);
    }
    // Clients an admin creates are not counted against it.
    const byAdmin = await admin.createOAuthClient(
      { workspaceId: id, name: "Admin's own", redirectUris: [redirectUri] },
      asRoot(),
    );
    expect(byAdmin.client?.clientId).toMatch(/^kgc_/);
  });

  it("refuses metadata it will not register, with RFC 7591's errors", async () => {
    const id = await openForRegistration("Registration 2");
    const cases: [unknown, string][] = [
      [{}, "invalid_redirect_uri"],
      [{ redirect_uris: ["http://app.example.com/cb"] }, "invalid_redirect_uri"],
      [{ redirect_uris: ["https://app.example.com/*"] }, "invalid_redirect_uri"],
      [
        { redirect_uris: [redirectUri], token_endpoint_auth_method: "private_key_jwt" },
        "invalid_client_metadata",
      ],
      [{ redirect_uris: [redirectUri], grant_types: ["implicit"] }, "invalid_client_metadata"],
      [{ redirect_uris: [redirectUri], response_types: ["token"] }, "invalid_client_metadata"],
      [{ redirect_uris: [redirectUri], scope: "openid admin" }, "invalid_client_metadata"],
      [
        { redirect_uris: [redirectUri], backchannel_logout_uri: "http://127.0.0.1:1/" },
        "invalid_client_metadata",
      ],
      [{ redirect_uris: [redirectUri], client_name: 7 }, "invalid_client_metadata"],
      [
        { redirect_uris: [redirectUri], client_name: "Keygate\u202eAdmin" },
        "invalid_client_metadata",
      ],
      [{ redirect_uris: [redirectUri], client_name: "Keygate\nAdmin" }, "invalid_client_metadata"],
      [{ redirect_uris: [redirectUri], client_name: "a\u0000b" }, "invalid_client_metadata"],
      [{ redirect_uris: [redirectUri], client_name: "a\u200bb" }, "invalid_client_metadata"],
      [[redirectUri], "invalid_client_metadata"],
      ["{not json", "invalid_request"],
    ];
    for (const [body, error] of cases) {
      const res = await register(id, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect((await res.json()).error, JSON.stringify(body)).toBe(error);
    }
    const form = await register(id, "redirect_uris=x", "application/x-www-form-urlencoded");
    expect(form.status).toBe(400);
    const get = await fetch(`${issuerOf(id)}/oauth2/register`);
    expect(get.status).toBe(405);
  });

  it("browser apps of any origin may call discovery, registration, token and userinfo, never with cookies", async () => {
    const origin = "https://app.example.net";
    for (const path of ["oauth2/token", "oauth2/register", "oauth2/userinfo"]) {
      const preflight = await fetch(`${issuerOf(workspaceId)}/${path}`, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type",
        },
      });
      expect(preflight.status, path).toBe(204);
      expect(preflight.headers.get("access-control-allow-origin"), path).toBe("*");
      expect(preflight.headers.get("access-control-allow-credentials"), path).toBeNull();
    }
    const token = await fetch(`${issuerOf(workspaceId)}/oauth2/token`, {
      method: "POST",
      headers: { origin, "content-type": "application/x-www-form-urlencoded" },
      body: "grant_type=authorization_code&client_id=nobody",
    });
    expect(token.status).toBe(401);
    expect(token.headers.get("access-control-allow-origin")).toBe("*");
    for (const url of [
      `${issuerOf(workspaceId)}/.well-known/openid-configuration`,
      `${keygate.url}/.well-known/jwks.json`,
      `${keygate.url}/.well-known/oauth-authorization-server`,
    ]) {
      const read = await fetch(url, { headers: { origin } });
      expect(read.status, url).toBe(200);
      expect(read.headers.get("access-control-allow-origin"), url).toBe("*");
    }
    const keysPreflight = await fetch(`${keygate.url}/.well-known/jwks.json`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "GET" },
    });
    expect(keysPreflight.status).toBe(204);
    // Navigations stay same-origin.
    const authorize = await fetch(`${issuerOf(workspaceId)}/oauth2/authorize?client_id=x`, {
      headers: { origin },
      redirect: "manual",
    });
    expect(authorize.headers.get("access-control-allow-origin")).toBeNull();
  });
});
