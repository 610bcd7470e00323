import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { decodeJwt } from "jose";
import * as client from "openid-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OAuthService } from "../gen/keygate/v1/oauth_service_pb.js";
import { Role } from "../gen/keygate/v1/types_pb.js";
import { CookieBrowser } from "./support/cookie-browser.js";
import { failure } from "./support/failure.js";
import { bearer, freePort, type Provisioner, password, signedIn } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

/**
 * Consent remembered per member and third-party client: an unmodified openid-client relying
 * party, the browser played by fetch with a cookie jar, the sign-in page by the RPCs it calls
 * (GetAuthorizationRequest with the person's token, then AcceptAuthorizationRequest), as in
 * test/openid-provider.test.ts.
 */

let keygate: TestKeygate;
let rootKey: string;
let workspaceId: string;
let by: Provisioner;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let oauth: ReturnType<typeof createClient<typeof OAuthService>>;
const redirectUri = "http://127.0.0.1:9/callback";
const calendarApi = "https://calendar.example.com/api";

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
  by = { admin, auth, adminKey: rootKey, workspaceId };
});
afterAll(async () => {
  await keygate?.stop();
});

const issuer = () => `${keygate.config.issuer}/w/${workspaceId}`;

async function relyingParty(name: string, firstParty = false) {
  const res = await admin.createOAuthClient(
    { workspaceId, name, redirectUris: [redirectUri], confidential: true, firstParty },
    bearer(rootKey),
  );
  const clientId = res.client?.clientId as string;
  const config = await client.discovery(
    new URL(issuer()),
    clientId,
    undefined,
    client.ClientSecretBasic(res.clientSecret),
    { execute: [client.allowInsecureRequests] },
  );
  return { clientId, config };
}

interface Asked {
  readonly scope?: string;
  readonly prompt?: string;
  readonly resource?: string;
}

/**
 * Sends the browser to /oauth2/authorize. Answers the code when the provider gave it at once,
 * or the sign-in request the page would be shown, or the error sent back to the client.
 */
async function authorize(browser: CookieBrowser, config: client.Configuration, asked: Asked = {}) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: asked.scope ?? "openid email",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    ...(asked.prompt ? { prompt: asked.prompt } : {}),
    ...(asked.resource ? { resource: asked.resource } : {}),
  });
  const res = await browser.get(url.toString());
  expect(res.status).toBe(303);
  const location = new URL(res.headers.get("location") as string);
  const exchange = (callback: URL) =>
    client.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: verifier,
      expectedState: state,
    });
  if (location.toString().startsWith(redirectUri)) {
    return {
      kind: location.searchParams.has("code") ? ("code" as const) : ("error" as const),
      error: location.searchParams.get("error"),
      exchange: () => exchange(location),
    };
  }
  const requestId = location.searchParams.get("request") as string;
  expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
  return {
    kind: "asked" as const,
    requestId,
    /** What the sign-in page learns about consent, with the token it holds (if any). */
    needsConsent: async (accessToken?: string) =>
      (
        await oauth.getAuthorizationRequest(
          { requestId },
          accessToken === undefined ? {} : bearer(accessToken),
        )
      ).request?.needsConsent,
    /** The page accepts with the person's token; the browser comes back for its code. */
    accept: async (accessToken: string) => {
      const { redirectTo } = await oauth.acceptAuthorizationRequest(
        { requestId },
        bearer(accessToken),
      );
      const back = await browser.get(redirectTo);
      return exchange(new URL(back.headers.get("location") as string));
    },
  };
}

type Outcome = Awaited<ReturnType<typeof authorize>>;
function asked(outcome: Outcome) {
  if (outcome.kind !== "asked") throw new Error(`expected the sign-in page, got ${outcome.kind}`);
  return outcome;
}
function given(outcome: Outcome) {
  if (outcome.kind !== "code") throw new Error(`expected a code at once, got ${outcome.kind}`);
  return outcome;
}

describe("consent to a third-party client is asked once", () => {
  it("asks the first time; the second time the provider session gives the code at once", async () => {
    const person = await signedIn(by, "consent-once");
    const { config } = await relyingParty("Calendar");
    const browser = new CookieBrowser();

    const first = asked(await authorize(browser, config));
    expect(await first.needsConsent()).toBe(true);
    expect(await first.needsConsent(person.accessToken)).toBe(true);
    const tokens = await first.accept(person.accessToken);
    expect(decodeJwt(tokens.access_token).sub).toBe(person.userId);

    // Same browser (its provider session), same or fewer scopes: no page at all.
    const again = given(await authorize(browser, config));
    const second = await again.exchange();
    expect(decodeJwt(second.access_token).sub).toBe(person.userId);
    expect(second.scope?.split(" ").sort()).toEqual(["email", "openid"]);
    given(await authorize(browser, config, { scope: "openid" }));
    // prompt=none is answered with a code too: nothing needs asking.
    given(await authorize(browser, config, { prompt: "none" }));

    // Another browser signs in first; the page, asking with the person's token, skips consent.
    // Anonymously, the answer is what it always was.
    const elsewhere = asked(await authorize(new CookieBrowser(), config));
    expect(await elsewhere.needsConsent()).toBe(true);
    expect(await elsewhere.needsConsent(person.accessToken)).toBe(false);
    await elsewhere.accept(person.accessToken);

    // Each acceptance is audited with what was granted; each exchange as the grant it made.
    const clientId = config.clientMetadata().client_id;
    const { events } = await admin.listAuditEvents(
      { workspaceId, types: ["oauth_request_accepted"], userId: person.userId },
      bearer(rootKey),
    );
    expect(events).toHaveLength(2);
    for (const event of events) {
      expect(event.details).toEqual({
        client_id: clientId,
        scope: "openid email",
        resource: "",
        consent_remembered: true,
      });
      expect(event.sessionId).toBe(person.sessionId);
    }
  });

  it("asks again for a wider scope or a new resource, and remembers the union", async () => {
    const person = await signedIn(by, "consent-wider");
    const { config } = await relyingParty("Planner");
    const browser = new CookieBrowser();
    await asked(await authorize(browser, config, { scope: "openid" })).accept(person.accessToken);
    given(await authorize(browser, config, { scope: "openid" }));

    const wider = asked(await authorize(browser, config, { scope: "openid email" }));
    expect(await wider.needsConsent(person.accessToken)).toBe(true);
    await wider.accept(person.accessToken);
    const resource = asked(
      await authorize(browser, config, { scope: "openid", resource: calendarApi }),
    );
    expect(await resource.needsConsent(person.accessToken)).toBe(true);
    const forApi = await resource.accept(person.accessToken);
    expect(decodeJwt(forApi.access_token).aud).toContain(calendarApi);

    // Everything allowed so far, in any combination, goes straight through.
    const all = given(
      await authorize(browser, config, { scope: "openid email", resource: calendarApi }),
    );
    expect(decodeJwt((await all.exchange()).access_token).aud).toContain(calendarApi);
    given(await authorize(browser, config, { scope: "openid email" }));
    asked(await authorize(browser, config, { scope: "openid profile" }));
  });

  it("prompt=consent asks even when everything is covered", async () => {
    const person = await signedIn(by, "consent-prompt");
    const { config } = await relyingParty("Tasks");
    const browser = new CookieBrowser();
    await asked(await authorize(browser, config)).accept(person.accessToken);
    const prompted = asked(await authorize(browser, config, { prompt: "consent" }));
    expect(await prompted.needsConsent(person.accessToken)).toBe(true);
    await prompted.accept(person.accessToken);
    // A first-party client asked with prompt=consent shows the request too.
    const first = await relyingParty("Own app", true);
    const own = asked(await authorize(browser, first.config, { prompt: "consent" }));
    expect(await own.needsConsent(person.accessToken)).toBe(true);
    expect(await own.needsConsent()).toBe(true);
    given(await authorize(browser, first.config));
  });

  it("prompt=none answers consent_required without a consent, login_required without a session", async () => {
    const person = await signedIn(by, "consent-none");
    const { config } = await relyingParty("Mail");
    const own = await relyingParty("Portal", true);
    const browser = new CookieBrowser();
    const none = await authorize(browser, config, { prompt: "none" });
    expect(none).toMatchObject({ kind: "error", error: "login_required" });
    // Signed in to the provider through a first-party client: consent is still missing.
    await asked(await authorize(browser, own.config)).accept(person.accessToken);
    const still = await authorize(browser, config, { prompt: "none" });
    expect(still).toMatchObject({ kind: "error", error: "consent_required" });
  });

  it("RevokeGrant and RevokeGrants forget the consent: the next sign-in asks again", async () => {
    const person = await signedIn(by, "consent-revoke");
    const { clientId, config } = await relyingParty("Drive");
    const browser = new CookieBrowser();
    await asked(await authorize(browser, config)).accept(person.accessToken);
    given(await authorize(browser, config));
    await auth.revokeGrant({ clientId }, bearer(person.accessToken));
    const afterOwn = asked(await authorize(browser, config));
    expect(await afterOwn.needsConsent(person.accessToken)).toBe(true);
    await afterOwn.accept(person.accessToken);
    given(await authorize(browser, config));

    await admin.revokeGrants({ workspaceId, userId: person.userId, clientId }, bearer(rootKey));
    asked(await authorize(browser, config));

    // A consent outlives the grant's sessions (signing out ends those); revoking still finds
    // it, and only then is nothing left to revoke.
    const unused = asked(await authorize(browser, config));
    const { redirectTo } = await oauth.acceptAuthorizationRequest(
      { requestId: unused.requestId },
      bearer(person.accessToken),
    );
    expect(redirectTo).toContain("/oauth2/authorize/resume");
    const revoked = await auth.revokeGrant({ clientId }, bearer(person.accessToken));
    expect(revoked.revokedCount).toBe(0);
    expect(await failure(auth.revokeGrant({ clientId }, bearer(person.accessToken)))).toMatchObject(
      { code: Code.NotFound },
    );
    const { events } = await admin.listAuditEvents(
      { workspaceId, types: ["grant_revoked"], userId: person.userId },
      bearer(rootKey),
    );
    expect(events.map((e) => e.details?.consent_forgotten)).toEqual([true, true, true]);
  });

  it("is per person: another person in the same browser is asked", async () => {
    const ada = await signedIn(by, "consent-ada");
    const bob = await signedIn(by, "consent-bob");
    const { config } = await relyingParty("Photos");
    const own = await relyingParty("Home", true);
    const browser = new CookieBrowser();
    await asked(await authorize(browser, config)).accept(ada.accessToken);
    given(await authorize(browser, config));

    // Bob signs in in the same browser (prompt=login): the page asks him, not Ada's answer.
    const forBob = asked(await authorize(browser, config, { prompt: "login" }));
    expect(await forBob.needsConsent(bob.accessToken)).toBe(true);
    expect(await forBob.needsConsent(ada.accessToken)).toBe(false);
    // Bob signs in to a first-party client: the browser's provider session is now his, and
    // the third-party client is not let through on Ada's consent.
    const signIn = asked(await authorize(browser, own.config, { prompt: "login" }));
    const fresh = await auth.login({ email: bob.email, password, workspaceId });
    if (fresh.result.case !== "tokens") throw new Error("no tokens");
    const home = await signIn.accept(fresh.result.value.accessToken);
    expect(decodeJwt(home.access_token).sub).toBe(bob.userId);
    const bobs = asked(await authorize(browser, config));
    expect(await bobs.needsConsent(bob.accessToken)).toBe(true);
    expect(await authorize(browser, config, { prompt: "none" })).toMatchObject({
      kind: "error",
      error: "consent_required",
    });
    const tokens = await bobs.accept(bob.accessToken);
    expect(decodeJwt(tokens.access_token).sub).toBe(bob.userId);
    const next = given(await authorize(browser, config));
    expect(decodeJwt((await next.exchange()).access_token).sub).toBe(bob.userId);
  });

  it("SECURITY.md 45: a token of another workspace learns nothing about consent here, even the same account's", async () => {
    const person = await signedIn(by, "consent-shared", { emailVerified: true });
    const { config } = await relyingParty("Notes");
    await asked(await authorize(new CookieBrowser(), config)).accept(person.accessToken);
    const pending = asked(await authorize(new CookieBrowser(), config));
    expect(await pending.needsConsent(person.accessToken)).toBe(false);

    // The same account, a member of another workspace too (a deployment admin adds a proven
    // account at once), signed in there: its token there is answered as an anonymous one is.
    const other = await admin.createWorkspace(
      { name: "Other", slug: `consent-other-${Date.now()}` },
      bearer(rootKey),
    );
    const otherId = other.workspace?.id as string;
    await admin.provisionUser(
      { email: person.email, workspaceId: otherId, role: Role.MEMBER },
      bearer(rootKey),
    );
    const login = await auth.login({ email: person.email, password, workspaceId: otherId });
    if (login.result.case !== "tokens") throw new Error("no tokens in the other workspace");
    const there = login.result.value;
    expect(there.userId).toBe(person.userId);
    expect(await pending.needsConsent(there.accessToken)).toBe(true);
    expect(await pending.needsConsent()).toBe(true);
    // Nor does it accept for this workspace.
    expect(
      await failure(
        oauth.acceptAuthorizationRequest(
          { requestId: pending.requestId },
          bearer(there.accessToken),
        ),
      ),
    ).toMatchObject({ code: Code.PermissionDenied });
    // A token that does not authenticate is refused, as on every call that reads one.
    expect(
      await failure(
        oauth.getAuthorizationRequest({ requestId: pending.requestId }, bearer("not-a-token")),
      ),
    ).toMatchObject({ code: Code.Unauthenticated });
    // Removing the member here forgets the consent with the membership.
    await admin.removeMember({ workspaceId, userId: person.userId }, bearer(rootKey));
    await admin.provisionUser(
      { email: person.email, workspaceId, role: Role.MEMBER },
      bearer(rootKey),
    );
    const back = await auth.login({ email: person.email, password, workspaceId });
    if (back.result.case !== "tokens") throw new Error("no tokens after re-adding");
    const later = asked(await authorize(new CookieBrowser(), config));
    expect(await later.needsConsent(back.result.value.accessToken)).toBe(true);
  });

  it("remembers a dynamically registered client like any third-party one, still flagged unverified", async () => {
    await admin.updateWorkspaceSettings(
      { workspaceId, settings: { oauthDynamicRegistration: true } },
      bearer(rootKey),
    );
    const res = await fetch(`${issuer()}/oauth2/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        client_name: "Agent",
        redirect_uris: [redirectUri],
        token_endpoint_auth_method: "none",
      }),
    });
    expect(res.status).toBe(201);
    const registered = await res.json();
    const config = await client.discovery(
      new URL(issuer()),
      registered.client_id,
      undefined,
      client.None(),
      { execute: [client.allowInsecureRequests] },
    );
    const person = await signedIn(by, "consent-registered");
    const browser = new CookieBrowser();
    const first = asked(await authorize(browser, config));
    const { request } = await oauth.getAuthorizationRequest(
      { requestId: first.requestId },
      bearer(person.accessToken),
    );
    expect(request).toMatchObject({ needsConsent: true, clientRegisteredDynamically: true });
    await first.accept(person.accessToken);
    given(await authorize(browser, config));
    const prompted = asked(await authorize(browser, config, { prompt: "consent" }));
    const shown = await oauth.getAuthorizationRequest(
      { requestId: prompted.requestId },
      bearer(person.accessToken),
    );
    expect(shown.request).toMatchObject({ needsConsent: true, clientRegisteredDynamically: true });
  });
});
