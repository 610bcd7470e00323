import { hashesEqual, hmacSha256 } from "../../crypto/opaque-tokens.js";
import { withTenant } from "../../db/with-tenant.js";
import { findOAuthClient } from "../../repositories/oauth-clients.js";
import { findSession, revokeSession } from "../../repositories/sessions.js";
import { audit } from "../audit.js";
import type { RequestMeta } from "../deps.js";
import { isUuid } from "../validate.js";
import { type BrowserCookies, workspaceIssuer } from "./authorize.js";
import { providerSessionOf } from "./browser-cookies.js";
import type { TokenDeps } from "./token.js";

/**
 * RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at
 * /w/<workspace>/oauth2/end_session: ends the browser's session at the provider, and with it
 * every grant made from it (each client that listens gets its back-channel logout token).
 */

export type EndSessionOutcome =
  | { readonly kind: "page"; readonly status: number; readonly message: string }
  /**
   * Ask the person first: no id_token_hint, or one that does not name this browser's session
   * (anyone may hold an old ID token). `confirmToken` goes into the form, so a page of another
   * origin on the same site cannot post the confirmation for them.
   */
  | { readonly kind: "confirm"; readonly confirmToken: string }
  | { readonly kind: "redirect"; readonly location: string }
  | { readonly kind: "signed_out" };

/** The confirmation's anti-forgery token: a MAC of the browser's provider-session cookie. */
function confirmTokenOf(secret: Buffer, cookie: string | undefined): string {
  return hmacSha256(secret)
    .update(`keygate/logout-confirm/v1\0${cookie ?? ""}`)
    .digest("base64url");
}

export async function endSession(
  deps: TokenDeps,
  meta: RequestMeta,
  workspaceId: string,
  params: URLSearchParams,
  cookies: BrowserCookies,
  /** A POST of the confirmation form: its `confirm_token`. */
  confirmation: string | null,
): Promise<EndSessionOutcome> {
  const issuer = workspaceIssuer(deps.issuerBase, workspaceId);
  const hint = params.get("id_token_hint");
  const claims = hint ? await deps.idTokens.idTokenHintClaims(hint, issuer) : null;
  if (hint && claims === null) {
    return {
      kind: "page",
      status: 400,
      message: "id_token_hint is not an ID token of this provider",
    };
  }
  const clientId =
    (typeof claims?.aud === "string" ? claims.aud : undefined) ??
    params.get("client_id") ??
    undefined;
  if (claims && params.has("client_id") && params.get("client_id") !== claims.aud) {
    return { kind: "page", status: 400, message: "client_id differs from the ID token's audience" };
  }
  const redirect = params.get("post_logout_redirect_uri");
  const now = deps.clock.now();
  const expected = confirmTokenOf(deps.tokenSecret, cookies.providerSession);
  const confirmed =
    confirmation !== null && hashesEqual(Buffer.from(confirmation), Buffer.from(expected));
  return withTenant(deps.pool, workspaceId, async (tx) => {
    // Only a URI registered for the client named by the hint (or client_id): no open redirect.
    let location: string | null = null;
    if (redirect !== null) {
      const client =
        clientId === undefined ? null : await findOAuthClient(tx, workspaceId, clientId);
      if (client === null || !client.post_logout_redirect_uris.includes(redirect)) {
        return {
          kind: "page",
          status: 400,
          message: "post_logout_redirect_uri is not registered for this client",
        } as const;
      }
      const url = new URL(redirect);
      const state = params.get("state");
      if (state !== null) url.searchParams.set("state", state);
      location = url.toString();
    }
    // Only this browser's own session ends: at once when the hint names it, else once the
    // person confirms on the page.
    const browser = await providerSessionOf(
      tx,
      deps.tokenSecret,
      workspaceId,
      cookies.providerSession,
      now,
    );
    let hinted: string | null = null;
    if (claims && typeof claims.sid === "string" && isUuid(claims.sid)) {
      const grant = await findSession(tx, workspaceId, claims.sid);
      if (grant !== null && grant.user_id === claims.sub)
        hinted = grant.parent_session_id ?? grant.id;
    }
    if (browser !== null && !(hinted === browser.id || confirmed)) {
      return { kind: "confirm", confirmToken: expected } as const;
    }
    if (
      browser !== null &&
      (await revokeSession(tx, { workspaceId, sessionId: browser.id, reason: "logout", now }))
    ) {
      await audit(tx, deps, meta, {
        type: "logout",
        workspaceId,
        userId: browser.user_id,
        sessionId: browser.id,
        outcome: "success",
        details: { via: "end_session", ...(clientId ? { client_id: clientId } : {}) },
      });
    }
    return location === null
      ? ({ kind: "signed_out" } as const)
      : ({ kind: "redirect", location } as const);
  }).then(async (outcome) => {
    await deps.revocations.changed();
    return outcome;
  });
}
