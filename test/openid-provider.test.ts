import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import * as client from "openid-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OAuthService } from "../gen/keygate/v1/oauth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { ManualClock } from "../src/clock.js";
import { sweep } from "../src/maintenance.js";
import { createVerifier } from "../src/verify/index.js";
import { CookieBrowser as Browser } from "./support/cookie-browser.js";
import { bearer, freePort, uniqueEmail } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

/**
 * The workspaces' OpenID Providers, driven by an unmodified openid-client relying party; the
 * browser's part (following redirects, holding cookies) is played by fetch with a cookie jar,
 * the sign-in page's part by the RPCs the page uses. test/openid-provider-browser.test.ts
 * does the same in Chromium through the hosted page.
 */

let keygate: TestKeygate;
let clock: ManualClock;
let rootKey: string;
let defaultWorkspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let oauth: ReturnType<typeof createClient<typeof OAuthService>>;
let introspection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;
const password = "correct horse battery staple";
const redirectUri = "http://127.0.0.1:9/callback";
const afterLogout = "http://127.0.0.1:9/signed-out";
const asRoot = () => bearer(rootKey);
/** The relying parties' back-channel logout endpoint: every logout token it was sent. */
let logoutReceiver: http.Server;
let logoutUri: string;
const logoutTokens: string[] = [];

beforeAll(async () => {
  clock = new ManualClock();
  const port = await freePort();
  logoutReceiver = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => {
      body += chunk.toString();
    });
    req.on("end", () => {
      const token = new URLSearchParams(body).get("logout_token");
      if (token) logoutTokens.push(token);
      res.statusCode = 200;
      res.end();
    });
  });
  await new Promise<void>((resolve) => logoutReceiver.listen(0, "127.0.0.1", resolve));
  logoutUri = `http://127.0.0.1:${(logoutReceiver.address() as AddressInfo).port}/backchannel`;
  keygate = await startTestKeygate(
    {
      KEYGATE_PORT: String(port),
      KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
      KEYGATE_OIDC_LOGOUT_PRIVATE_NETWORKS: "true",
    },
    { clock },
  );
  rootKey = keygate.bootstrapped?.adminKey as string;
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  oauth = createClient(OAuthService, transport);
  introspection = createClient(TokenIntrospectionService, transport);
});
afterAll(async () => {
  await keygate?.stop();
  await new Promise((resolve) => logoutReceiver?.close(resolve));
});

const issuerOf = (workspaceId: string) => `${keygate.config.issuer}/w/${workspaceId}`;

/** The authorization request an /authorize answer sends the browser to sign in for. */
function requestIdOf(res: Response): string {
  return new URL(res.headers.get("location") as string).searchParams.get("request") as string;
}

/** Whether the provider still takes a grant's access token (its userinfo answers). */
async function served(accessToken: string, workspaceId = defaultWorkspaceId) {
  const res = await fetch(`${issuerOf(workspaceId)}/oauth2/userinfo`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  return res.status === 200;
}

async function user(workspaceId = defaultWorkspaceId) {
  const email = uniqueEmail("rp-user");
  await admin.provisionUser({ email, password, workspaceId, emailVerified: true }, asRoot());
  return email;
}

async function signIn(email: string, workspaceId = defaultWorkspaceId) {
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  return res.result.value;
}

async function registered(
  options: {
    workspaceId?: string;
    confidential?: boolean;
    firstParty?: boolean;
    backchannel?: boolean;
  } = {},
) {
  const res = await admin.createOAuthClient(
    {
      workspaceId: options.workspaceId ?? defaultWorkspaceId,
      name: "Example app",
      redirectUris: [redirectUri],
      postLogoutRedirectUris: [afterLogout],
      confidential: options.confidential ?? true,
      firstParty: options.firstParty ?? true,
      backchannelLogoutUri: options.backchannel ? logoutUri : "",
    },
    asRoot(),
  );
  return { clientId: res.client?.clientId as string, secret: res.clientSecret };
}

async function relyingParty(
  registration: { clientId: string; secret: string },
  workspaceId = defaultWorkspaceId,
) {
  return client.discovery(
    new URL(issuerOf(workspaceId)),
    registration.clientId,
    undefined,
    registration.secret === "" ? client.None() : client.ClientSecretBasic(registration.secret),
    { execute: [client.allowInsecureRequests] },
  );
}

interface Started {
  url: URL;
  verifier: string;
  state: string;
  nonce: string;
}

async function authorizationUrl(
  config: client.Configuration,
  extra: Record<string, string> = {},
): Promise<Started> {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: "openid email",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    nonce,
    ...extra,
  });
  return { url, verifier, state, nonce };
}

/** The whole dance: authorize, sign in on the page's RPCs, accept, come back with a code. */
async function signInThroughProvider(
  config: client.Configuration,
  email: string,
  options: { browser?: Browser; workspaceId?: string; extra?: Record<string, string> } = {},
) {
  const browser = options.browser ?? new Browser();
  const started = await authorizationUrl(config, options.extra);
  const first = await browser.get(started.url.toString());
  expect(first.status).toBe(303);
  const toPage = new URL(first.headers.get("location") as string);
  const requestId = toPage.searchParams.get("request") as string;
  expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
  const tokens = await signIn(email, options.workspaceId);
  const { redirectTo } = await oauth.acceptAuthorizationRequest(
    { requestId },
    bearer(tokens.accessToken),
  );
  const back = await browser.get(redirectTo);
  expect(back.status).toBe(303);
  const callback = new URL(back.headers.get("location") as string);
  return { browser, started, callback, tokens, requestId };
}

async function exchange(config: client.Configuration, callback: URL, started: Started) {
  return client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: started.verifier,
    expectedState: started.state,
    expectedNonce: started.nonce,
    idTokenExpected: true,
  });
}

describe("the OpenID Provider with an unmodified openid-client", () => {
  it("discovery says RS256, S256, code, and the workspace's own issuer", async () => {
    const config = await relyingParty(await registered());
    const meta = config.serverMetadata();
    expect(meta.issuer).toBe(issuerOf(defaultWorkspaceId));
    expect(meta.id_token_signing_alg_values_supported).toContain("RS256");
    expect(meta.code_challenge_methods_supported).toEqual(["S256"]);
    expect(meta.response_types_supported).toEqual(["code"]);
    expect(meta.authorization_response_iss_parameter_supported).toBe(true);
    // RFC 8414's location answers the same document.
    const rfc8414 = await fetch(
      `${keygate.url}/.well-known/oauth-authorization-server/w/${defaultWorkspaceId}`,
    );
    expect(await rfc8414.json()).toEqual(meta);
    const unknown = await fetch(
      `${keygate.url}/w/00000000-0000-4000-8000-000000000000/.well-known/openid-configuration`,
    );
    expect(unknown.status).toBe(404);
  });

  it("code flow: ID token with iss, aud, nonce, auth_time, at_hash, sid; userinfo; iss in the answer", async () => {
    const config = await relyingParty(await registered());
    const email = await user();
    const { callback, started, tokens: uiTokens } = await signInThroughProvider(config, email);
    expect(callback.origin + callback.pathname).toBe(redirectUri);
    expect(callback.searchParams.get("iss")).toBe(issuerOf(defaultWorkspaceId));
    expect(callback.searchParams.get("state")).toBe(started.state);

    const tokens = await exchange(config, callback, started);
    expect(decodeProtectedHeader(tokens.id_token as string).alg).toBe("RS256");
    const claims = tokens.claims();
    expect(claims?.iss).toBe(issuerOf(defaultWorkspaceId));
    expect(claims?.aud).toBe(config.clientMetadata().client_id);
    expect(claims?.nonce).toBe(started.nonce);
    expect(claims?.email).toBe(email);
    expect(claims?.email_verified).toBe(true);
    expect(claims?.amr).toEqual(["pwd"]);
    expect(typeof claims?.auth_time).toBe("number");
    const hash = new Uint8Array(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(tokens.access_token)),
    );
    expect(claims?.at_hash).toBe(Buffer.from(hash.subarray(0, 16)).toString("base64url"));
    // The grant is a session of its own, hanging from the browser's.
    expect(claims?.sid).toBe(decodeJwt(tokens.access_token).sid);
    expect(claims?.sid).not.toBe(uiTokens.sessionId);
    expect(decodeJwt(tokens.access_token).client_id).toBe(config.clientMetadata().client_id);

    const info = await client.fetchUserInfo(config, tokens.access_token, claims?.sub as string);
    expect(info).toEqual({ sub: claims?.sub, email, email_verified: true });

    // The grant's token is for the provider, not for the services behind Keygate: it names
    // the workspace's issuer as audience, so Introspect and keygate/verify do not take it.
    expect(decodeJwt(tokens.access_token).aud).toBe(issuerOf(defaultWorkspaceId));
    const introspected = await introspection.introspect({ token: tokens.access_token }, asRoot());
    expect(introspected.active).toBe(false);
    const verifier = createVerifier({
      baseUrl: keygate.url,
      adminKey: rootKey,
      audience: keygate.config.audience,
      issuer: keygate.config.issuer,
      transport: "connect",
    });
    try {
      await verifier.ready();
      await expect(verifier.verify(tokens.access_token)).rejects.toThrow();
      // The same verifier takes the person's own Keygate token.
      expect((await verifier.verify(uiTokens.accessToken)).userId).toBe(claims?.sub);
    } finally {
      await verifier.close();
    }
    expect(await served(tokens.access_token)).toBe(true);
  });

  it("a signed-in browser gets its next code without signing in again; prompt=login asks again", async () => {
    const config = await relyingParty(await registered());
    const email = await user();
    const { browser } = await signInThroughProvider(config, email);
    expect([...browser.cookies().keys()].sort()).toEqual(["kg_browser", "kg_provider_session"]);
    const again = await authorizationUrl(config);
    const res = await browser.get(again.url.toString());
    const location = new URL(res.headers.get("location") as string);
    expect(location.origin + location.pathname).toBe(redirectUri);
    expect((await exchange(config, location, again)).claims()?.nonce).toBe(again.nonce);

    const login = await authorizationUrl(config, { prompt: "login" });
    const toPage = new URL(
      (await browser.get(login.url.toString())).headers.get("location") as string,
    );
    expect(toPage.searchParams.has("request")).toBe(true);
    // max_age=0 too; a session signed in before the request is refused when accepting.
    const old = await signIn(email);
    clock.advance(2_000);
    const maxAge = await authorizationUrl(config, { max_age: "0" });
    const page = new URL(
      (await browser.get(maxAge.url.toString())).headers.get("location") as string,
    );
    const requestId = page.searchParams.get("request") as string;
    expect((await oauth.getAuthorizationRequest({ requestId })).request?.signInAfter).toBeDefined();
    const refused = await oauth
      .acceptAuthorizationRequest({ requestId }, bearer(old.accessToken))
      .catch((e: unknown) => e);
    expect(ConnectError.from(refused).code).toBe(Code.FailedPrecondition);
    const newer = await signIn(email);
    await oauth.acceptAuthorizationRequest({ requestId }, bearer(newer.accessToken));
  });

  it("SECURITY.md 46: refresh rotates; a reused refresh token ends the grant", async () => {
    const config = await relyingParty(await registered());
    const { callback, started } = await signInThroughProvider(config, await user());
    const tokens = await exchange(config, callback, started);
    const next = await client.refreshTokenGrant(config, tokens.refresh_token as string);
    expect(next.refresh_token).not.toBe(tokens.refresh_token);
    expect(next.claims()?.sid).toBe(tokens.claims()?.sid);
    clock.advance(60_000);
    const reused = await client
      .refreshTokenGrant(config, tokens.refresh_token as string)
      .catch((e: unknown) => e);
    expect((reused as client.ResponseBodyError).error).toBe("invalid_grant");
    expect(await served(next.access_token)).toBe(false);
  });

  it("SECURITY.md 46: signing out of the browser's session ends the grants made from it", async () => {
    const config = await relyingParty(await registered());
    const { callback, started, tokens: ui } = await signInThroughProvider(config, await user());
    const tokens = await exchange(config, callback, started);
    await auth.logout({}, bearer(ui.accessToken));
    expect(await served(tokens.access_token)).toBe(false);
    const refreshed = await client
      .refreshTokenGrant(config, tokens.refresh_token as string)
      .catch((e: unknown) => e);
    expect((refreshed as client.ResponseBodyError).error).toBe("invalid_grant");
  });

  it("a public client uses PKCE without a secret", async () => {
    const registration = await registered({ confidential: false });
    expect(registration.secret).toBe("");
    const config = await relyingParty(registration);
    const { callback, started } = await signInThroughProvider(config, await user());
    expect((await exchange(config, callback, started)).claims()?.sub).toBeDefined();
  });
});

describe("what the provider refuses", () => {
  const authorizeUrl = (workspaceId: string, params: Record<string, string>) =>
    `${issuerOf(workspaceId)}/oauth2/authorize?${new URLSearchParams(params)}`;
  const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

  it("SECURITY.md 44: a redirect URI that is not an exact match gets a page, never a redirect", async () => {
    const { clientId } = await registered();
    for (const uri of [
      "http://127.0.0.1:9/callback/extra",
      "http://127.0.0.1:9/callbac",
      "http://127.0.0.1:10/callback",
      "http://127.0.0.1:9/callback?x=1",
      "http://127.0.0.1:9/*",
      "https://127.0.0.1:9/callback",
      "http://evil.example/callback",
    ]) {
      const res = await fetch(
        authorizeUrl(defaultWorkspaceId, {
          client_id: clientId,
          redirect_uri: uri,
          response_type: "code",
          code_challenge: challenge,
          code_challenge_method: "S256",
        }),
        { redirect: "manual" },
      );
      expect(res.status, uri).toBe(400);
      expect(res.headers.get("location"), uri).toBeNull();
    }
  });

  it("PKCE plain or none, other response types, prompt=none without a session: errors at the client", async () => {
    const { clientId } = await registered();
    const base = { client_id: clientId, redirect_uri: redirectUri, state: "s1" };
    const cases: [Record<string, string>, string][] = [
      [
        { response_type: "code", code_challenge: challenge, code_challenge_method: "plain" },
        "invalid_request",
      ],
      [{ response_type: "code" }, "invalid_request"],
      [
        { response_type: "token", code_challenge: challenge, code_challenge_method: "S256" },
        "unsupported_response_type",
      ],
      [
        {
          response_type: "code",
          code_challenge: challenge,
          code_challenge_method: "S256",
          prompt: "none",
        },
        "login_required",
      ],
      [
        {
          response_type: "code",
          code_challenge: challenge,
          code_challenge_method: "S256",
          scope: "openid admin",
        },
        "invalid_scope",
      ],
    ];
    for (const [params, error] of cases) {
      const res = await fetch(authorizeUrl(defaultWorkspaceId, { ...base, ...params }), {
        redirect: "manual",
      });
      expect(res.status).toBe(303);
      const location = new URL(res.headers.get("location") as string);
      expect(location.origin + location.pathname).toBe(redirectUri);
      expect(location.searchParams.get("error"), JSON.stringify(params)).toBe(error);
      expect(location.searchParams.get("state")).toBe("s1");
      expect(location.searchParams.get("iss")).toBe(issuerOf(defaultWorkspaceId));
    }
  });

  it("SECURITY.md 43: a reused code is refused and what it gave is revoked; a code older than 60 s is refused", async () => {
    const config = await relyingParty(await registered());
    const email = await user();
    const { callback, started } = await signInThroughProvider(config, email);
    const tokens = await exchange(config, callback, started);
    const again = await exchange(config, callback, started).catch((e: unknown) => e);
    expect((again as client.ResponseBodyError).error).toBe("invalid_grant");
    expect(await served(tokens.access_token)).toBe(false);

    const late = await signInThroughProvider(config, email);
    clock.advance(61_000);
    const expired = await exchange(config, late.callback, late.started).catch((e: unknown) => e);
    expect((expired as client.ResponseBodyError).error).toBe("invalid_grant");
  });

  it("SECURITY.md 43: a wrong verifier, another redirect URI or another client's code is refused", async () => {
    const first = await registered();
    const config = await relyingParty(first);
    const { callback, started } = await signInThroughProvider(config, await user());
    const code = callback.searchParams.get("code") as string;
    const token = (body: Record<string, string>, secret = first.secret, id = first.clientId) =>
      fetch(`${issuerOf(defaultWorkspaceId)}/oauth2/token`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`,
        },
        body: new URLSearchParams({ grant_type: "authorization_code", code, ...body }),
      });
    const wrongVerifier = await token({ redirect_uri: redirectUri, code_verifier: "x".repeat(43) });
    expect(wrongVerifier.status).toBe(400);
    expect((await wrongVerifier.json()).error).toBe("invalid_grant");
    const other = await registered();
    const otherClient = await token(
      { redirect_uri: redirectUri, code_verifier: started.verifier },
      other.secret,
      other.clientId,
    );
    expect((await otherClient.json()).error).toBe("invalid_grant");
    const badSecret = await token(
      { redirect_uri: redirectUri, code_verifier: started.verifier },
      "kgcs_wrong",
    );
    expect(badSecret.status).toBe(401);
    expect((await badSecret.json()).error).toBe("invalid_client");
    // The code is still good for its own client after all that.
    expect((await exchange(config, callback, started)).access_token).toBeTruthy();
  });

  it("SECURITY.md 45: a client's token cannot call Keygate's API, nor accept requests for another client", async () => {
    const config = await relyingParty(await registered());
    const email = await user();
    const { callback, started } = await signInThroughProvider(config, email);
    const tokens = await exchange(config, callback, started);
    const session = await auth.getSession({}, bearer(tokens.access_token)).catch((e: unknown) => e);
    expect(ConnectError.from(session).code).toBe(Code.Unauthenticated);

    const victimConfig = await relyingParty(await registered());
    const pending = await authorizationUrl(victimConfig);
    const res = await new Browser().get(pending.url.toString());
    const requestId = requestIdOf(res);
    const accepted = await oauth
      .acceptAuthorizationRequest({ requestId }, bearer(tokens.access_token))
      .catch((e: unknown) => e);
    expect(ConnectError.from(accepted).code).toBe(Code.Unauthenticated);
  });

  it("SECURITY.md 45: a request completes only in the browser that made it", async () => {
    const config = await relyingParty(await registered());
    const email = await user();
    const started = await authorizationUrl(config);
    const victim = new Browser();
    const first = await victim.get(started.url.toString());
    const requestId = requestIdOf(first);
    const tokens = await signIn(email);
    const { redirectTo } = await oauth.acceptAuthorizationRequest(
      { requestId },
      bearer(tokens.accessToken),
    );
    // Without the answer's secret, even the browser that made the request gets nothing.
    const bare = new URL(redirectTo);
    bare.searchParams.delete("answer");
    expect((await victim.get(bare.toString())).status).toBe(403);
    bare.searchParams.set("answer", "x".repeat(43));
    expect((await victim.get(bare.toString())).status).toBe(403);
    expect((await victim.get(redirectTo)).status).toBe(303);
  });

  it("SECURITY.md 45: an attacker's request answered by a victim completes for neither", async () => {
    const config = await relyingParty(await registered());
    const email = await user();
    // The attacker makes the request in their own browser and sends the victim the page.
    const attacker = new Browser();
    const started = await authorizationUrl(config);
    const first = await attacker.get(started.url.toString());
    const requestId = requestIdOf(first);
    // The victim signs in on the genuine page and accepts; their browser comes back.
    const tokens = await signIn(email);
    const { redirectTo } = await oauth.acceptAuthorizationRequest(
      { requestId },
      bearer(tokens.accessToken),
    );
    const victim = new Browser();
    const refused = await victim.get(redirectTo);
    expect(refused.status).toBe(403);
    expect(refused.headers.get("location")).toBeNull();
    // The attacker's browser has the cookie but never saw the answer; and the request is over.
    const resume = `${issuerOf(defaultWorkspaceId)}/oauth2/authorize/resume?request=${requestId}`;
    const attempt = await attacker.get(resume);
    expect(attempt.headers.get("location")).toBeNull();
    expect([...attacker.cookies().keys()]).not.toContain("kg_provider_session");
    // A planted browser cookie (not Keygate's own) is replaced, not adopted.
    const planted = await fetch(started.url, {
      redirect: "manual",
      headers: { cookie: `kg_browser=kgb_${"A".repeat(43)}.forged` },
    });
    expect(planted.headers.getSetCookie().some((c) => c.startsWith("kg_browser="))).toBe(true);
  });

  it("SECURITY.md 45: the tenant boundary: a client of A is unknown at B; a member of B only cannot accept A's request", async () => {
    const other = await admin.createWorkspace(
      { name: "Other", slug: `other-${Date.now()}` },
      asRoot(),
    );
    const otherId = other.workspace?.id as string;
    const { clientId } = await registered();
    const atOther = await fetch(
      authorizeUrl(otherId, {
        client_id: clientId,
        redirect_uri: redirectUri,
        response_type: "code",
        code_challenge: challenge,
        code_challenge_method: "S256",
      }),
      { redirect: "manual" },
    );
    expect(atOther.status).toBe(400);
    expect(atOther.headers.get("location")).toBeNull();

    const config = await relyingParty(await registered());
    const pending = await authorizationUrl(config);
    const res = await new Browser().get(pending.url.toString());
    const requestId = requestIdOf(res);
    const outsider = await signIn(await user(otherId), otherId);
    const accepted = await oauth
      .acceptAuthorizationRequest({ requestId }, bearer(outsider.accessToken))
      .catch((e: unknown) => e);
    expect(ConnectError.from(accepted).code).toBe(Code.PermissionDenied);
  });

  it("a declined request sends access_denied to the client", async () => {
    const config = await relyingParty(await registered());
    const started = await authorizationUrl(config);
    const browser = new Browser();
    const first = await browser.get(started.url.toString());
    const requestId = requestIdOf(first);
    const { redirectTo } = await oauth.rejectAuthorizationRequest({ requestId });
    const back = new URL((await browser.get(redirectTo)).headers.get("location") as string);
    expect(back.searchParams.get("error")).toBe("access_denied");
    const { events } = await admin.listAuditEvents(
      { workspaceId: defaultWorkspaceId, types: ["oauth_request_rejected"] },
      bearer(rootKey),
    );
    expect(events.map((e) => e.details?.client_id)).toContain(config.clientMetadata().client_id);
    expect(back.searchParams.get("state")).toBe(started.state);
    // The first answer stands: accepting after declining finds nothing.
    const tokens = await signIn(await user());
    const late = await oauth
      .acceptAuthorizationRequest({ requestId }, bearer(tokens.accessToken))
      .catch((e: unknown) => e);
    expect(ConnectError.from(late).code).toBe(Code.NotFound);
  });
});

describe("logout", () => {
  /** The logout tokens sent for a grant, checked as a relying party checks them. */
  async function logoutTokenFor(sid: string, clientId: string) {
    await expect
      .poll(() => logoutTokens.filter((t) => decodeJwt(t).sid === sid).length, { timeout: 10_000 })
      .toBe(1);
    const token = logoutTokens.find((t) => decodeJwt(t).sid === sid) as string;
    const jwks = createRemoteJWKSet(new URL(`${keygate.url}/.well-known/jwks.json`));
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer: issuerOf(defaultWorkspaceId),
      audience: clientId,
      typ: "logout+jwt",
      currentDate: clock.now(),
    });
    expect(protectedHeader.alg).toBe("RS256");
    expect(payload.events).toEqual({ "http://schemas.openid.net/event/backchannel-logout": {} });
    expect(payload.nonce).toBeUndefined();
    expect(typeof payload.jti).toBe("string");
    return payload;
  }

  it("RP-initiated logout ends the browser's session, its grants, and tells each client", async () => {
    const first = await registered({ backchannel: true });
    const config = await relyingParty(first);
    const second = await relyingParty(await registered({ backchannel: true }));
    const email = await user();
    const { browser, callback, started } = await signInThroughProvider(config, email);
    const tokens = await exchange(config, callback, started);
    // The same browser signs in to a second client without signing in again.
    const again = await authorizationUrl(second);
    const location = new URL(
      (await browser.get(again.url.toString())).headers.get("location") as string,
    );
    const other = await exchange(second, location, again);

    const logout = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token as string,
      post_logout_redirect_uri: afterLogout,
      state: "bye",
    });
    const res = await browser.get(logout.toString());
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe(`${afterLogout}?state=bye`);
    expect(browser.cookies().get("kg_provider_session")).toBe("");
    for (const token of [tokens.access_token, other.access_token]) {
      expect(await served(token)).toBe(false);
    }
    const payload = await logoutTokenFor(tokens.claims()?.sid as string, first.clientId);
    expect(payload.sub).toBe(tokens.claims()?.sub);
    await logoutTokenFor(other.claims()?.sid as string, second.clientMetadata().client_id);
    // The next authorization asks for a sign-in again.
    const after = await authorizationUrl(config);
    const next = new URL(
      (await browser.get(after.url.toString())).headers.get("location") as string,
    );
    expect(next.searchParams.has("request")).toBe(true);
  });

  it("SECURITY.md 44: a post-logout redirect that is not registered is refused (no open redirect)", async () => {
    const config = await relyingParty(await registered());
    const { callback, started } = await signInThroughProvider(config, await user());
    const tokens = await exchange(config, callback, started);
    const logout = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token as string,
      post_logout_redirect_uri: "https://evil.example/",
    });
    const res = await fetch(logout, { redirect: "manual" });
    expect(res.status).toBe(400);
    expect(res.headers.get("location")).toBeNull();
    // Nothing was ended.
    expect(await served(tokens.access_token)).toBe(true);
  });

  it("without an ID token of this browser's session the person confirms first, on a form only this page can post", async () => {
    const config = await relyingParty(await registered());
    const { browser, callback, started } = await signInThroughProvider(config, await user());
    const tokens = await exchange(config, callback, started);
    const endpoint = `${issuerOf(defaultWorkspaceId)}/oauth2/end_session`;
    // An ID token alone, from somewhere without the browser's cookie, ends nothing.
    const elsewhere = await fetch(
      `${endpoint}?${new URLSearchParams({ id_token_hint: tokens.id_token as string })}`,
      { redirect: "manual" },
    );
    expect(elsewhere.status).toBe(200);
    expect(await served(tokens.access_token)).toBe(true);
    const ask = await browser.get(endpoint);
    expect(ask.status).toBe(200);
    const page = await ask.text();
    expect(page).toContain('name="confirm" value="yes"');
    const confirmToken = /name="confirm_token" value="([^"]+)"/.exec(page)?.[1] as string;
    expect(await served(tokens.access_token)).toBe(true);
    const jar = [...browser.cookies()].map(([k, v]) => `${k}=${v}`).join("; ");
    const post = (body: string) =>
      fetch(endpoint, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", cookie: jar },
        body,
      });
    // A forged confirmation (another origin on the same site cannot read the token) is asked again.
    expect(await (await post("confirm=yes&confirm_token=forged")).text()).toContain("Sign out?");
    expect(await served(tokens.access_token)).toBe(true);
    const confirmed = await post(`confirm=yes&confirm_token=${encodeURIComponent(confirmToken)}`);
    expect(confirmed.status).toBe(200);
    expect(await served(tokens.access_token)).toBe(false);
  });

  it("SECURITY.md 46: blocking the user sends the back-channel logout too", async () => {
    const registration = await registered({ backchannel: true });
    const config = await relyingParty(registration);
    const email = await user();
    const { callback, started } = await signInThroughProvider(config, email);
    const tokens = await exchange(config, callback, started);
    await admin.blockUser({ userId: tokens.claims()?.sub as string }, asRoot());
    await logoutTokenFor(tokens.claims()?.sid as string, registration.clientId);
  });
});

describe("what anonymous callers can leave behind", () => {
  it("expired authorization requests and codes are swept a day later", async () => {
    const config = await relyingParty(await registered());
    const pending = await authorizationUrl(config);
    const res = await new Browser().get(pending.url.toString());
    const requestId = requestIdOf(res);
    const { callback } = await signInThroughProvider(config, await user());
    expect(callback.searchParams.get("code")).toBeTruthy();
    clock.advance(86_400_000 + 11 * 60_000);
    const swept = await sweep(keygate.database.pool, clock.now());
    // At least this test's request and code (other tests' expired rows go too).
    expect(swept?.oauth).toBeGreaterThanOrEqual(2);
    const gone = await oauth.getAuthorizationRequest({ requestId }).catch((e: unknown) => e);
    expect(ConnectError.from(gone).code).toBe(Code.NotFound);
  });

  it("authorization requests from one address are rate limited (oauth_authorize_ip)", async () => {
    const limited = await startTestKeygate({
      KEYGATE_RATE_LIMITS: JSON.stringify({
        oauth_authorize_ip: { limit: 2, window_seconds: 600 },
      }),
    });
    try {
      const url = `${limited.url}/w/${limited.bootstrapped?.workspaceId}/oauth2/authorize?client_id=x`;
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await fetch(url, { redirect: "manual" })).status);
      expect(statuses).toEqual([400, 400, 429]);
    } finally {
      await limited.stop();
    }
  });
});
