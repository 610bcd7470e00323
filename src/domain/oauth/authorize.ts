import { createHash } from "node:crypto";
import type { CommonQueryMethods } from "slonik";
import { hashesEqual, newOpaqueToken, opaqueHash } from "../../crypto/opaque-tokens.js";
import { withTenant } from "../../db/with-tenant.js";
import { findOAuthClient, type OAuthClientRow } from "../../repositories/oauth-clients.js";
import { insertOAuthCode } from "../../repositories/oauth-codes.js";
import {
  completeOAuthInteraction,
  findLiveOAuthInteraction,
  insertOAuthInteraction,
  type OAuthInteractionRow,
} from "../../repositories/oauth-interactions.js";
import { findLiveBrowserSession } from "../../repositories/sessions.js";
import type { AuthDeps, RequestMeta } from "../deps.js";
import { isUuid } from "../validate.js";
import {
  answerHash,
  newBrowserCookie,
  providerSessionCookie,
  providerSessionOf,
  validBrowserCookie,
} from "./browser-cookies.js";
import { consentNeeded } from "./consents.js";
import { OAuthProtocolError } from "./errors.js";
import { parseResources } from "./resources.js";
import { parseScope, supportedScopes } from "./scopes.js";

/**
 * The authorization endpoint (RFC 6749 section 4.1, OpenID Connect Core 3.1.2) and the
 * sign-in step between it and the code: the hosted page or a workspace's own UI signs the
 * user in with the ordinary RPCs, accepts the request (OAuthService), and sends the browser
 * back here to collect the code.
 */

export interface ProviderDeps extends AuthDeps {
  /** The deployment's issuer URL without a trailing slash; a workspace's is `<it>/w/<id>`. */
  readonly issuerBase: string;
  /** Where a request that needs the user goes, `?request=<id>` appended. */
  readonly signInUrl: string;
  /** The deployment's own audience (KEYGATE_AUDIENCE): never a client's resource. */
  readonly audience: string;
}

/** How long the user has to sign in. */
export const interactionLifetimeMs = 10 * 60_000;
/** RFC 6749 section 4.1.2 recommends at most ten minutes; a minute is plenty for a client. */
export const codeLifetimeMs = 60_000;

export function workspaceIssuer(base: string, workspaceId: string): string {
  return `${base}/w/${workspaceId}`;
}

/** What the browser holds for the provider: both cookies, as sent (or absent). */
export interface BrowserCookies {
  /** Ties authorization requests to the browser that made them. */
  readonly browser: string | undefined;
  /** The session the browser last signed in to a client with (single sign-on). */
  readonly providerSession: string | undefined;
}

export type AuthorizeOutcome =
  /** Nothing can be sent back to the client (no trustworthy redirect URI): tell the user. */
  | {
      readonly kind: "page";
      readonly status: number;
      readonly error: string;
      readonly description: string;
    }
  | {
      readonly kind: "redirect";
      readonly location: string;
      /** A new browser cookie to set. */
      readonly browser?: string;
      /** The provider session cookie to set, and for how long. */
      readonly providerSession?: { readonly value: string; readonly maxAgeSeconds: number };
    };

const page = (status: number, error: string, description: string): AuthorizeOutcome => ({
  kind: "page",
  status,
  error,
  description,
});

/** A base64url SHA-256: what S256 makes of any verifier (RFC 7636 section 4.2). */
const s256Challenge = /^[A-Za-z0-9_-]{43}$/;
const promptValues = new Set(["none", "login", "consent", "select_account"]);

/** The redirect back to the client, with RFC 9207's `iss` on every answer. */
function back(
  redirectUri: string,
  issuer: string,
  params: Record<string, string | null | undefined>,
): string {
  const url = new URL(redirectUri);
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  url.searchParams.set("iss", issuer);
  return url.toString();
}

/** GET or POST /w/<workspace>/oauth2/authorize. */
export async function authorize(
  deps: ProviderDeps,
  meta: RequestMeta,
  workspaceId: string,
  params: URLSearchParams,
  cookies: BrowserCookies,
): Promise<AuthorizeOutcome> {
  if (!isUuid(workspaceId)) return page(404, "invalid_request", "no such provider");
  // Anyone may ask, and a request that needs the user is a row: RESOURCE_EXHAUSTED (429) past
  // the per-address limit, before any lookup.
  await deps.limiter.hit(null, [["oauth_authorize_ip", meta.ipAddress ?? "unknown"]]);
  const issuer = workspaceIssuer(deps.issuerBase, workspaceId);
  // Until the client and its redirect URI check out, nothing goes back to anyone's URL.
  const clientIds = params.getAll("client_id");
  if (clientIds.length !== 1 || clientIds[0] === "" || (clientIds[0]?.length ?? 0) > 100) {
    return page(400, "invalid_request", "client_id is missing or repeated");
  }
  const clientId = clientIds[0] as string;
  const client = await withTenant(deps.pool, workspaceId, (tx) =>
    findOAuthClient(tx, workspaceId, clientId),
  );
  if (client === null) return page(400, "invalid_client", "this provider has no such client");
  const redirects = params.getAll("redirect_uri");
  if (redirects.length !== 1) {
    return page(400, "invalid_request", "redirect_uri is missing or repeated");
  }
  const redirectUri = redirects[0] as string;
  if (!client.redirect_uris.includes(redirectUri)) {
    return page(400, "invalid_request", "redirect_uri is not registered for this client");
  }

  const stateValues = params.getAll("state");
  // A state too long to keep is not echoed either (it would only bloat the redirect).
  const state =
    stateValues.length === 1 && (stateValues[0] as string).length <= 2048
      ? (stateValues[0] as string)
      : null;
  const refuse = (error: string, description: string): AuthorizeOutcome => ({
    kind: "redirect",
    location: back(redirectUri, issuer, { error, error_description: description, state }),
  });
  for (const name of new Set(params.keys())) {
    // RFC 8707 section 2: resource alone may be repeated, once per resource.
    if (name !== "resource" && params.getAll(name).length > 1) {
      return refuse("invalid_request", `${name} is repeated`);
    }
  }
  const get = (name: string) => params.get(name) ?? undefined;
  if (params.has("request"))
    return refuse("request_not_supported", "request objects are not supported");
  if (params.has("request_uri")) {
    return refuse("request_uri_not_supported", "request_uri is not supported");
  }
  if (get("response_type") !== "code") {
    return refuse("unsupported_response_type", "only response_type=code is supported");
  }
  const mode = get("response_mode");
  if (mode !== undefined && mode !== "query") {
    return refuse("invalid_request", "only response_mode=query is supported");
  }
  if (get("code_challenge_method") !== "S256") {
    return refuse("invalid_request", "PKCE is required, with code_challenge_method=S256");
  }
  const challenge = get("code_challenge") ?? "";
  if (!s256Challenge.test(challenge)) {
    return refuse("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)");
  }
  const scopes = parseScope(get("scope"));
  // A user grants what the provider knows about users; an API's own scopes (a client's with
  // client_credentials) are the client's, never a user's to hand out.
  const unknown = scopes.filter((s) => !client.scopes.includes(s) || !supportedScopes.includes(s));
  if (unknown.length > 0) {
    return refuse("invalid_scope", `this client may not ask for: ${unknown.join(" ")}`);
  }
  let resources: string[];
  try {
    resources = parseResources(params.getAll("resource"), deps);
  } catch (error) {
    if (error instanceof OAuthProtocolError) return refuse(error.error, error.description);
    throw error;
  }
  const prompt = parseScope(get("prompt"));
  if (prompt.some((p) => !promptValues.has(p)))
    return refuse("invalid_request", "unknown prompt value");
  if (prompt.includes("none") && prompt.length > 1) {
    return refuse("invalid_request", "prompt=none goes alone");
  }
  const maxAge = get("max_age");
  if (maxAge !== undefined && !/^\d{1,9}$/.test(maxAge)) {
    return refuse("invalid_request", "max_age must be a number of seconds");
  }
  const nonce = get("nonce") ?? null;
  const loginHint = get("login_hint") ?? null;
  if (
    (nonce?.length ?? 0) > 512 ||
    (stateValues[0]?.length ?? 0) > 2048 ||
    (loginHint?.length ?? 0) > 320
  ) {
    return refuse("invalid_request", "nonce, state or login_hint is too long");
  }

  const now = deps.clock.now();
  // A sign-in older than this does not do (OpenID Connect Core 3.1.2.1: prompt=login, max_age).
  const signInAfter = prompt.includes("login")
    ? now.getTime()
    : maxAge !== undefined
      ? now.getTime() - Number(maxAge) * 1000
      : null;
  const request = {
    redirect_uri: redirectUri,
    scopes,
    state,
    nonce,
    code_challenge: challenge,
    response_mode: "query" as const,
    sign_in_after: signInAfter,
    login_hint: loginHint,
    resources,
    consent_prompted: prompt.includes("consent"),
  };

  return withTenant(deps.pool, workspaceId, async (tx) => {
    const session = await providerSessionOf(
      tx,
      deps.tokenSecret,
      workspaceId,
      cookies.providerSession,
      now,
    );
    // auth_time is in whole seconds in the ID token, so max_age compares seconds too.
    const fresh =
      session !== null &&
      !prompt.includes("login") &&
      (signInAfter === null ||
        Math.floor(session.auth_time / 1000) >= Math.floor(signInAfter / 1000));
    // Only a fresh session's user has a say yet: a stale one signs in first, and the sign-in
    // page asks GetAuthorizationRequest again for whoever signs in.
    const needsConsent =
      !fresh || (await consentNeeded(tx, { client, request, userId: session.user_id }));
    if (fresh && !needsConsent) {
      const code = await issueCode(tx, deps, {
        client,
        request,
        parentSessionId: session.id,
        userId: session.user_id,
      });
      return {
        kind: "redirect",
        location: back(redirectUri, issuer, { code, state }),
      } satisfies AuthorizeOutcome;
    }
    if (prompt.includes("none")) {
      return fresh
        ? refuse("consent_required", "the user has to approve this client")
        : refuse("login_required", "the user has to sign in");
    }
    const browser = validBrowserCookie(deps.tokenSecret, cookies.browser);
    const browserToken = browser ?? newBrowserCookie(deps.tokenSecret);
    const interaction = await insertOAuthInteraction(tx, {
      workspaceId,
      clientId: client.client_id,
      request,
      browserHash: opaqueHash(deps.tokenSecret, "browser", browserToken),
      now,
      expiresAt: new Date(now.getTime() + interactionLifetimeMs),
    });
    const location = new URL(deps.signInUrl);
    location.searchParams.set("request", interaction.id);
    return {
      kind: "redirect",
      location: location.toString(),
      ...(browser === undefined ? { browser: browserToken } : {}),
    } satisfies AuthorizeOutcome;
  });
}

/** GET /w/<workspace>/oauth2/authorize/resume?request=<id>: the browser is back from the UI. */
export async function resume(
  deps: ProviderDeps,
  workspaceId: string,
  requestId: string,
  /** The secret the answer's redirect_to carried. */
  answer: string,
  cookies: BrowserCookies,
): Promise<AuthorizeOutcome> {
  if (!isUuid(workspaceId) || !isUuid(requestId)) {
    return page(400, "invalid_request", "no such sign-in request");
  }
  const issuer = workspaceIssuer(deps.issuerBase, workspaceId);
  const now = deps.clock.now();
  return withTenant(deps.pool, workspaceId, async (tx) => {
    const interaction = await findLiveOAuthInteraction(tx, {
      workspaceId,
      id: requestId,
      now,
      lock: true,
    });
    if (interaction === null) {
      return page(
        400,
        "invalid_request",
        "this sign-in request is unknown, finished or expired: start again from the application",
      );
    }
    const sameBrowser =
      validBrowserCookie(deps.tokenSecret, cookies.browser) !== undefined &&
      hashesEqual(
        opaqueHash(deps.tokenSecret, "browser", cookies.browser as string),
        interaction.browser_hash,
      );
    if (interaction.outcome === null) {
      if (!sameBrowser)
        return page(403, "access_denied", "this sign-in was started in another browser");
      const location = new URL(deps.signInUrl);
      location.searchParams.set("request", interaction.id);
      return { kind: "redirect", location: location.toString() } satisfies AuthorizeOutcome;
    }
    // The code goes only to a browser that holds both the cookie that made the request and the
    // secret handed to whoever answered it: a request made in one browser and answered in
    // another (a victim signing in to an attacker's link) completes in neither.
    if (
      answer === "" ||
      interaction.answer_hash === null ||
      !hashesEqual(answerHash(deps.tokenSecret, answer), interaction.answer_hash)
    ) {
      return page(403, "access_denied", "this sign-in was answered elsewhere");
    }
    if (!sameBrowser) {
      await completeOAuthInteraction(tx, { workspaceId, id: interaction.id, now });
      return page(403, "access_denied", "this sign-in was started in another browser");
    }
    const client = await findOAuthClient(tx, workspaceId, interaction.client_id);
    if (client === null) return page(400, "invalid_client", "this provider has no such client");
    const { request } = interaction;
    const refuse = (error: string, description: string): AuthorizeOutcome => ({
      kind: "redirect",
      location: back(request.redirect_uri, issuer, {
        error,
        error_description: description,
        state: request.state,
      }),
    });
    await completeOAuthInteraction(tx, { workspaceId, id: interaction.id, now });
    if (interaction.outcome === "rejected" || interaction.session_id === null) {
      return refuse("access_denied", "the user declined");
    }
    const session = await findLiveBrowserSession(tx, {
      workspaceId,
      sessionId: interaction.session_id,
      now,
    });
    if (session === null)
      return refuse("login_required", "the session ended before the sign-in did");
    const code = await issueCode(tx, deps, {
      client,
      request,
      parentSessionId: session.id,
      userId: session.user_id,
    });
    const settings = deps.settings.workspaceDefaults;
    return {
      kind: "redirect",
      location: back(request.redirect_uri, issuer, { code, state: request.state }),
      providerSession: {
        value: providerSessionCookie(deps.tokenSecret, workspaceId, session.id),
        maxAgeSeconds: settings.session_lifetime_seconds,
      },
    } satisfies AuthorizeOutcome;
  });
}

async function issueCode(
  tx: CommonQueryMethods,
  deps: ProviderDeps,
  input: {
    client: OAuthClientRow;
    request: OAuthInteractionRow["request"];
    parentSessionId: string;
    userId: string;
  },
): Promise<string> {
  const code = newOpaqueToken("authorization_code");
  const now = deps.clock.now();
  await insertOAuthCode(tx, {
    codeHash: opaqueHash(deps.tokenSecret, "authorization_code", code),
    workspaceId: input.client.workspace_id,
    clientId: input.client.client_id,
    parentSessionId: input.parentSessionId,
    userId: input.userId,
    redirectUri: input.request.redirect_uri,
    scopes: input.request.scopes,
    nonce: input.request.nonce,
    codeChallenge: input.request.code_challenge,
    resources: input.request.resources,
    now,
    expiresAt: new Date(now.getTime() + codeLifetimeMs),
  });
  return code;
}

/** RFC 7636 section 4.6: BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge. */
export function pkceMatches(verifier: string, challenge: string): boolean {
  if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier)) return false;
  const computed = createHash("sha256").update(verifier, "ascii").digest("base64url");
  return hashesEqual(Buffer.from(computed), Buffer.from(challenge));
}
