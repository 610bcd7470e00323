import { withTenant } from "../../db/with-tenant.js";
import { findOAuthClient } from "../../repositories/oauth-clients.js";
import { findSession, revokeSession } from "../../repositories/sessions.js";
import { audit } from "../audit.js";
import type { RequestMeta } from "../deps.js";
import { type BrowserCookies, providerSessionOf, workspaceIssuer } from "./authorize.js";
import type { TokenDeps } from "./token.js";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at
 * /w/<workspace>/oauth2/end_session: ends the browser's session at the provider, and with it
 * every grant made from it (each client that listens gets its back-channel logout token).
 */

export type EndSessionOutcome =
  | { readonly kind: "page"; readonly status: number; readonly message: string }
  /** No id_token_hint: ask the person before signing them out (a cross-site GET must not). */
  | { readonly kind: "confirm" }
  | { readonly kind: "redirect"; readonly location: string }
  | { readonly kind: "signed_out" };

export async function endSession(
  deps: TokenDeps,
  meta: RequestMeta,
  workspaceId: string,
  params: URLSearchParams,
  cookies: BrowserCookies,
  confirmed: boolean,
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
    // The session to end: the hint's grant's browser session, else the browser's own.
    let sessionId: string | null = null;
    if (claims && typeof claims.sid === "string") {
      const grant = uuidPattern.test(claims.sid)
        ? await findSession(tx, workspaceId, claims.sid)
        : null;
      if (grant !== null && grant.user_id === claims.sub)
        sessionId = grant.parent_session_id ?? grant.id;
    } else {
      if (!confirmed) return { kind: "confirm" } as const;
      sessionId =
        (await providerSessionOf(tx, deps, workspaceId, cookies.providerSession, now))?.id ?? null;
    }
    if (sessionId !== null) {
      const session = await findSession(tx, workspaceId, sessionId);
      if (
        session !== null &&
        (await revokeSession(tx, { workspaceId, sessionId, reason: "logout", now }))
      ) {
        await audit(tx, deps, meta, {
          type: "logout",
          workspaceId,
          userId: session.user_id,
          sessionId,
          outcome: "success",
          details: { via: "end_session", ...(clientId ? { client_id: clientId } : {}) },
        });
      }
    }
    return location === null
      ? ({ kind: "signed_out" } as const)
      : ({ kind: "redirect", location } as const);
  }).then(async (outcome) => {
    await deps.revocations.changed();
    return outcome;
  });
}
