import { createHash } from "node:crypto";
import type { JwtAlgorithm } from "../../crypto/jwt-keys.js";
import { isOpaqueToken, opaqueHash } from "../../crypto/opaque-tokens.js";
import { withTenant } from "../../db/with-tenant.js";
import { DomainError } from "../../errors.js";
import { findOAuthClient, type OAuthClientRow } from "../../repositories/oauth-clients.js";
import {
  lockOAuthCodeForExchange,
  markOAuthCodeUsed,
  spendOAuthCode,
} from "../../repositories/oauth-codes.js";
import { findSession, revokeSession } from "../../repositories/sessions.js";
import { findUserById, type UserRow } from "../../repositories/users.js";
import { type Amr, acrOf, amrOf } from "../amr.js";
import { audit, auditEvent } from "../audit.js";
import type { RequestMeta } from "../deps.js";
import {
  authenticate,
  type IssuedTokens,
  membershipChanged,
  planSession,
  refresh,
  sessionDraft,
  signTokens,
  type TokenDraft,
} from "../sessions.js";
import { effectiveSettings } from "../settings.js";
import { type ProviderDeps, pkceMatches, workspaceIssuer } from "./authorize.js";
import {
  checkClientCredentials,
  countClientAuthFailure,
  type PresentedCredentials,
} from "./client-authentication.js";
import { OAuthProtocolError } from "./errors.js";
import { narrowResources } from "./resources.js";

/** The token endpoint and userinfo (RFC 6749 section 3.2, OpenID Connect Core 3.1.3, 5.3). */

export interface TokenDeps extends ProviderDeps {
  readonly idTokens: {
    signIdToken(input: {
      claims: Record<string, unknown>;
      ttlSeconds: number;
      typ?: string;
    }): Promise<{ token: string; algorithm: JwtAlgorithm; expiresAt: Date }>;
    idTokenHintClaims(token: string, issuer: string): Promise<Record<string, unknown> | null>;
  };
}

/** How a client authenticated at the token endpoint (see client-authentication.ts). */
export type ClientCredentials = PresentedCredentials;

const invalidClient = (description: string) =>
  new OAuthProtocolError("invalid_client", description, 401);
const invalidGrant = (description: string) => new OAuthProtocolError("invalid_grant", description);

/** The client, when its credentials check out by its one registered method. */
export async function authenticateClient(
  deps: TokenDeps,
  workspaceId: string,
  credentials: ClientCredentials,
  meta: RequestMeta,
): Promise<OAuthClientRow> {
  try {
    if (
      credentials.clientId === "" ||
      credentials.clientId.length > 100 ||
      credentials.clientId.includes("\0")
    ) {
      throw invalidClient("client authentication failed");
    }
    // One statement on the pool, not a tenant transaction (four round trips): a deliberate
    // service-role read (migrations/011) of one row named by the workspace of the URL and the
    // client id presented, on every token request; nothing of it is answered before the
    // credentials check out.
    const client = await findOAuthClient(deps.pool, workspaceId, credentials.clientId);
    return await checkClientCredentials(deps, client, credentials, deps.issuerBase);
  } catch (error) {
    return countClientAuthFailure(deps, meta, error);
  }
}

export interface TokenAnswer {
  readonly access_token: string;
  readonly token_type: "Bearer";
  readonly expires_in: number;
  readonly refresh_token: string;
  readonly scope: string;
  readonly id_token?: string;
}

type Exchange =
  | {
      kind: "ok";
      draft: TokenDraft;
      scopes: readonly string[];
      nonce: string | null;
      authTime: number;
      user: IdTokenUser | null;
    }
  | { kind: "reused" }
  | { kind: "invalid"; description: string };

/** grant_type=authorization_code: a single-use code, its PKCE verifier, the same redirect URI. */
export async function exchangeCode(
  deps: TokenDeps,
  meta: RequestMeta,
  client: OAuthClientRow,
  form: {
    code: string;
    redirectUri: string | undefined;
    codeVerifier: string | undefined;
    /** RFC 8707 section 2.2: some of the resources the code was granted for, or none (all). */
    resources: readonly string[];
  },
): Promise<TokenAnswer> {
  if (!isOpaqueToken("authorization_code", form.code)) {
    throw invalidGrant("the code is invalid, expired or used");
  }
  const workspaceId = client.workspace_id;
  const codeHash = opaqueHash(deps.tokenSecret, "authorization_code", form.code);
  const now = deps.clock.now();
  const outcome = await withTenant(deps.pool, workspaceId, async (tx): Promise<Exchange> => {
    // The code (locked), the browser session it hangs from, the workspace and the user in one
    // round trip, and everything the exchange writes in one more (spendOAuthCode): the
    // transaction's statements are most of an exchange's cost.
    const code = await lockOAuthCodeForExchange(tx, { workspaceId, codeHash, now });
    if (code === null || code.client_id !== client.client_id) {
      return { kind: "invalid", description: "the code is invalid, expired or used" };
    }
    if (code.used_at !== null) {
      // RFC 6749 section 4.1.2: a code used twice was stolen, or replayed; what it gave ends.
      if (code.grant_session_id !== null) {
        await revokeSession(tx, {
          workspaceId,
          sessionId: code.grant_session_id,
          reason: "authorization_code_reuse",
          now,
        });
      }
      await audit(tx, deps, meta, {
        type: "oauth_code_reuse_detected",
        workspaceId,
        userId: code.user_id,
        sessionId: code.grant_session_id,
        outcome: "failure",
        details: { client_id: client.client_id },
      });
      return { kind: "reused" };
    }
    if (code.expires_at <= now.getTime()) {
      return { kind: "invalid", description: "the code is invalid, expired or used" };
    }
    if (form.redirectUri !== code.redirect_uri) {
      return {
        kind: "invalid",
        description: "redirect_uri differs from the authorization request's",
      };
    }
    if (form.codeVerifier === undefined || !pkceMatches(form.codeVerifier, code.code_challenge)) {
      return { kind: "invalid", description: "code_verifier does not match the code_challenge" };
    }
    if (
      code.parent_id === null ||
      code.parent_auth_time === null ||
      code.workspace_settings === null
    ) {
      await markOAuthCodeUsed(tx, { workspaceId, codeHash, grantSessionId: null, now });
      return { kind: "invalid", description: "the user's session has ended" };
    }
    const settings = effectiveSettings(
      { settings: code.workspace_settings },
      deps.settings.workspaceDefaults,
    );
    const grant = {
      clientId: client.client_id,
      parentSessionId: code.parent_id,
      scopes: code.scopes,
      authTime: new Date(code.parent_auth_time),
      // The grant keeps every resource it was authorized for; its first token is for those
      // the exchange names (RFC 8707 section 2.2), and a refresh may still ask for any.
      resources: code.resources,
      tokenResources: narrowResources(code.resources, form.resources),
    };
    const plan = planSession(deps, meta, {
      workspaceId,
      userId: code.user_id,
      role: "member",
      settings,
      amr: amrOf(code.parent_amr ?? []) as Amr[],
      grant,
    });
    const spent = await spendOAuthCode(tx, {
      codeHash,
      codeUsedAt: now,
      session: { ...plan.session, grant },
      refreshTokenHash: plan.refreshTokenHash,
      audit: auditEvent(deps, meta, {
        type: "oauth_grant_created",
        workspaceId,
        userId: code.user_id,
        outcome: "success",
        details: { client_id: client.client_id, scope: code.scopes.join(" ") },
      }),
    });
    if (spent?.status !== "active" || spent.session_id === null) throw membershipChanged();
    return {
      kind: "ok",
      draft: sessionDraft(plan, spent.session_id, spent.role),
      scopes: code.scopes,
      nonce: code.nonce,
      authTime: code.parent_auth_time,
      user:
        code.user_email === null
          ? null
          : { email: code.user_email, email_verified: code.user_email_verified === true },
    };
  });
  switch (outcome.kind) {
    case "reused":
      await deps.revocations.changed();
      throw invalidGrant("the code was used already; the tokens issued from it are revoked");
    case "invalid":
      throw invalidGrant(outcome.description);
  }
  const tokens = await signTokens(deps, outcome.draft);
  return answer(deps, client, tokens, {
    scopes: outcome.scopes,
    nonce: outcome.nonce,
    authTime: outcome.authTime,
    user: outcome.user,
  });
}

/** grant_type=refresh_token: Keygate's rotation, reuse detection included, for the grant's client. */
export async function refreshGrant(
  deps: TokenDeps,
  meta: RequestMeta,
  client: OAuthClientRow,
  refreshToken: string,
  resources: readonly string[],
): Promise<TokenAnswer> {
  let tokens: IssuedTokens;
  try {
    tokens = await refresh(deps, meta, refreshToken, { id: client.client_id, resources });
  } catch (error) {
    if (error instanceof DomainError && error.kind === "unauthenticated") {
      throw invalidGrant(error.message);
    }
    throw error;
  }
  const session = await withTenant(deps.pool, tokens.workspaceId, (tx) =>
    findSession(tx, tokens.workspaceId, tokens.sessionId),
  );
  if (session === null || session.client_id !== client.client_id) {
    throw invalidGrant("the refresh token is invalid or expired");
  }
  return answer(deps, client, tokens, {
    scopes: session.scopes ?? [],
    nonce: null,
    authTime: session.auth_time ?? session.created_at,
  });
}

/** What an ID token says of its user. */
type IdTokenUser = Pick<UserRow, "email" | "email_verified">;

async function answer(
  deps: TokenDeps,
  client: OAuthClientRow,
  tokens: IssuedTokens,
  grant: {
    scopes: readonly string[];
    nonce: string | null;
    authTime: number;
    /** The user as the grant's transaction read them; read now when absent. */
    user?: IdTokenUser | null;
  },
): Promise<TokenAnswer> {
  const expiresIn = Math.max(
    0,
    Math.round((tokens.accessTokenExpiresAt.getTime() - deps.clock.now().getTime()) / 1000),
  );
  const base = {
    access_token: tokens.accessToken,
    token_type: "Bearer" as const,
    expires_in: expiresIn,
    refresh_token: tokens.refreshToken,
    scope: grant.scopes.join(" "),
  };
  if (!grant.scopes.includes("openid")) return base;
  const user = grant.user ?? (await findUserById(deps.pool, tokens.userId));
  if (user === null) throw invalidGrant("the user no longer exists");
  const issuer = workspaceIssuer(deps.issuerBase, tokens.workspaceId);
  const claims: Record<string, unknown> = {
    iss: issuer,
    sub: tokens.userId,
    aud: client.client_id,
    azp: client.client_id,
    auth_time: Math.floor(grant.authTime / 1000),
    sid: tokens.sessionId,
    amr: [...tokens.amr],
    acr: acrOf(tokens.amr),
    ...(grant.nonce === null ? {} : { nonce: grant.nonce }),
    ...(grant.scopes.includes("email")
      ? { email: user.email, email_verified: user.email_verified }
      : {}),
  };
  // at_hash (OpenID Connect Core 3.1.3.6): the left half of the access token's hash, with the
  // hash of the ID token's algorithm: SHA-256 for RS256 and ES256.
  const digest = createHash("sha256").update(tokens.accessToken, "ascii").digest();
  claims.at_hash = digest.subarray(0, digest.length / 2).toString("base64url");
  const idToken = await deps.idTokens.signIdToken({
    claims,
    ttlSeconds: deps.settings.workspaceDefaults.access_token_ttl_seconds,
  });
  return { ...base, id_token: idToken.token };
}

/** GET or POST /w/<workspace>/oauth2/userinfo with a grant's access token. */
export async function userinfo(
  deps: TokenDeps,
  workspaceId: string,
  accessToken: string,
): Promise<Record<string, unknown>> {
  const invalidToken = (description: string) =>
    new OAuthProtocolError("invalid_token", description, 401);
  let principal: Awaited<ReturnType<typeof authenticate>>;
  try {
    principal = await authenticate(deps, accessToken, workspaceId, {
      clientOf: workspaceIssuer(deps.issuerBase, workspaceId),
    });
  } catch (error) {
    if (error instanceof DomainError && error.kind !== "unavailable") {
      throw invalidToken("the access token is invalid, expired or revoked");
    }
    throw error;
  }
  const session = await withTenant(deps.pool, workspaceId, (tx) =>
    findSession(tx, workspaceId, principal.sessionId),
  );
  const scopes = session?.scopes ?? [];
  if (!scopes.includes("openid")) {
    throw new OAuthProtocolError("insufficient_scope", "the grant has no openid scope", 403);
  }
  const user = await findUserById(deps.pool, principal.userId);
  if (user === null) throw invalidToken("the access token is invalid, expired or revoked");
  return {
    sub: principal.userId,
    ...(scopes.includes("email") ? { email: user.email, email_verified: user.email_verified } : {}),
  };
}
