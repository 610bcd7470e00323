import { createHash } from "node:crypto";
import { decodeJwt } from "jose";
import { LRUCache } from "lru-cache";
import type { DatabasePool } from "slonik";
import type { Clock } from "../clock.js";
import {
  TokenInvalidError,
  type VerifiedAccessToken,
  type VerifiedClientAccessToken,
} from "../crypto/jwt.js";
import { isOpaqueToken, opaqueHash } from "../crypto/opaque-tokens.js";
import { withTenant } from "../db/with-tenant.js";
import type { Role } from "../repositories/memberships.js";
import {
  findRefreshTokenSession,
  findRefreshTokenState,
  revokeSession,
} from "../repositories/sessions.js";
import { actorOf, type Caller, requireIntrospect } from "./admin-auth.js";
import { acrOf, amrOf } from "./amr.js";
import { audit } from "./audit.js";
import type { RequestMeta } from "./deps.js";
import type { RevocableToken } from "./revocations.js";
import { Violations } from "./validate.js";

export type TokenTypeHint = "access_token" | "refresh_token" | null;

/** RFC 7662: an active token's claims, or only `active: false`. */
export type Introspection =
  | { readonly active: false }
  | {
      readonly active: true;
      /** A user's token (a session's); see the client variant below. */
      readonly subject: "user";
      readonly tokenType: "access_token" | "refresh_token";
      readonly sub: string;
      readonly workspaceId: string;
      readonly sid: string;
      readonly role: Role;
      /** How the session was signed in (RFC 8176), and the acr that follows. */
      readonly amr: readonly string[];
      readonly acr: string;
      /** Seconds since the epoch. */
      readonly exp: number;
      readonly iat: number;
      readonly iss: string;
      readonly aud: readonly string[];
      readonly jti: string;
    }
  | {
      readonly active: true;
      /** A client's own token (client_credentials): no user, no session, no role. */
      readonly subject: "client";
      readonly tokenType: "access_token";
      readonly clientId: string;
      readonly scopes: readonly string[];
      readonly workspaceId: string;
      readonly exp: number;
      readonly iat: number;
      readonly iss: string;
      readonly aud: readonly string[];
      readonly jti: string;
    };

const inactive: Introspection = Object.freeze({ active: false });
export const maxBatchTokens = 100;
const maxTokenLength = 8192;

export interface IntrospectionDeps {
  readonly pool: DatabasePool;
  readonly clock: Clock;
  readonly tokenSecret: Buffer;
  readonly issuer: string;
  readonly audience: string;
  readonly cacheSize: number;
  readonly tokens: {
    verifyAccessToken(token: string): Promise<VerifiedAccessToken>;
    verifyClientAccessToken(token: string): Promise<VerifiedClientAccessToken>;
  };
  readonly revocations: {
    assertTrusted(): void;
    revokes(token: RevocableToken): boolean;
    changed(): Promise<void>;
  };
}

/**
 * Token introspection (TokenIntrospectionService.Introspect, IntrospectBatch, RevokeToken).
 *
 * Access tokens: the signature, issuer, audience and expiry (SigningKeys), then the in-memory
 * revocation state, then the caller's workspace; no database call. Verified tokens are kept
 * in a bounded LRU keyed by the token's SHA-256 until their exp, so a token seen again skips
 * the signature check; the revocation state and the expiry still apply to every answer.
 * When the revocation state cannot be trusted the answer is UNAVAILABLE, never active.
 *
 * Refresh tokens: looked up by their HMAC with their session, user and membership (one query),
 * and only when the caller's hint says `refresh_token`; otherwise they answer inactive.
 */
export class Introspector {
  private readonly cache: LRUCache<string, VerifiedAccessToken> | undefined;

  constructor(private readonly deps: IntrospectionDeps) {
    this.cache =
      deps.cacheSize > 0
        ? new LRUCache<string, VerifiedAccessToken>({ max: deps.cacheSize })
        : undefined;
  }

  async introspect(
    caller: Caller,
    request: { token: string; hint: TokenTypeHint },
  ): Promise<Introspection> {
    requireIntrospect(caller);
    validTokens([request.token], () => "token");
    return this.check(caller, request.token, request.hint);
  }

  /** Up to maxBatchTokens tokens, answered in order. */
  async introspectBatch(
    caller: Caller,
    requests: readonly { token: string; hint: TokenTypeHint }[],
  ): Promise<Introspection[]> {
    requireIntrospect(caller);
    if (requests.length > maxBatchTokens) {
      new Violations().add("tokens", `holds more than ${maxBatchTokens} tokens`).throwIfAny();
    }
    validTokens(
      requests.map((r) => r.token),
      (i) => `tokens[${i}].token`,
    );
    return Promise.all(requests.map((r) => this.check(caller, r.token, r.hint)));
  }

  /**
   * RFC 7009: ends the session of a refresh or access token. Unknown, expired or already
   * ended tokens, and tokens of another workspace than a workspace-scoped caller's, succeed
   * without effect, so the answer says nothing about a token.
   */
  async revoke(
    caller: Caller,
    meta: RequestMeta,
    request: { token: string; hint: TokenTypeHint },
  ): Promise<void> {
    requireIntrospect(caller);
    validTokens([request.token], () => "token");
    const target = await this.sessionOf(request.token);
    if (!target) return;
    if (caller.kind === "admin_key" && caller.workspaceId !== null) {
      if (caller.workspaceId !== target.workspaceId) return;
    }
    const ended = await withTenant(this.deps.pool, target.workspaceId, async (tx) => {
      const now = this.deps.clock.now();
      if (!(await revokeSession(tx, { ...target, reason: "token_revoked", now }))) return false;
      await audit(tx, this.deps, meta, {
        type: "session_revoked",
        workspaceId: target.workspaceId,
        sessionId: target.sessionId,
        actor: actorOf(caller),
        outcome: "success",
        details: { via: "token_revocation" },
      });
      return true;
    });
    if (ended) await this.deps.revocations.changed();
  }

  /** Entries in the token cache, for tests and metrics. */
  get cachedTokens(): number {
    return this.cache?.size ?? 0;
  }

  /**
   * A refresh token is active only when the caller asks about one (hint `refresh_token`):
   * gateways that look only at `active` ask about bearer credentials with no hint or
   * `access_token`, and must never take a refresh token for an access token.
   */
  private async check(caller: Caller, token: string, hint: TokenTypeHint): Promise<Introspection> {
    if (isOpaqueToken("refresh", token) && hint !== "refresh_token") return inactive;
    const found = isOpaqueToken("refresh", token)
      ? await this.checkRefreshToken(token)
      : await this.checkAccessToken(token);
    if (!found.active) return inactive;
    if (caller.kind === "admin_key" && caller.workspaceId !== null) {
      if (caller.workspaceId !== found.workspaceId) return inactive;
    }
    return found;
  }

  private async checkAccessToken(token: string): Promise<Introspection> {
    this.deps.revocations.assertTrusted();
    const claims = await this.verified(token);
    if (claims === "client") return this.checkClientAccessToken(token);
    if (!claims) return inactive;
    const now = this.deps.clock.now().getTime();
    if (claims.expiresAt.getTime() <= now || this.deps.revocations.revokes(claims)) {
      return inactive;
    }
    return {
      active: true,
      subject: "user",
      tokenType: "access_token",
      sub: claims.userId,
      workspaceId: claims.workspaceId,
      sid: claims.sessionId,
      role: claims.role,
      amr: claims.amr,
      acr: acrOf(claims.amr),
      exp: claims.expiresAt.getTime() / 1000,
      iat: claims.issuedAt.getTime() / 1000,
      iss: this.deps.issuer,
      aud: [this.deps.audience],
      jti: claims.jti,
    };
  }

  /**
   * A client's own token: the same checks, its own audience (the workspace's issuer), and the
   * revocation state, where deleting the client or rotating its secret revoked its sid.
   */
  private async checkClientAccessToken(token: string): Promise<Introspection> {
    let claims: VerifiedClientAccessToken;
    try {
      claims = await this.deps.tokens.verifyClientAccessToken(token);
    } catch (error) {
      if (error instanceof TokenInvalidError) return inactive;
      throw error;
    }
    const now = this.deps.clock.now().getTime();
    const revoked = this.deps.revocations.revokes({
      userId: claims.clientId,
      workspaceId: claims.workspaceId,
      sessionId: claims.machineSessionId,
      issuedAt: claims.issuedAt,
      kid: claims.kid,
    });
    if (claims.expiresAt.getTime() <= now || revoked) return inactive;
    return {
      active: true,
      subject: "client",
      tokenType: "access_token",
      clientId: claims.clientId,
      scopes: claims.scopes,
      workspaceId: claims.workspaceId,
      exp: claims.expiresAt.getTime() / 1000,
      iat: claims.issuedAt.getTime() / 1000,
      // The workspace's provider issued it (RFC 9068), and it is its audience too.
      iss: claims.audience,
      aud: [claims.audience],
      jti: claims.jti,
    };
  }

  /**
   * The token's checked claims, from the cache or the signature check; null if invalid;
   * "client" for a client's own token, which is checked by its own rules. Only a token the
   * cache does not hold pays for telling the two apart.
   */
  private async verified(token: string): Promise<VerifiedAccessToken | "client" | null> {
    const key = this.cache ? createHash("sha256").update(token).digest("base64") : "";
    const cached = this.cache?.get(key);
    if (cached) return cached;
    if (isClientToken(token)) return "client";
    let claims: VerifiedAccessToken;
    try {
      claims = await this.deps.tokens.verifyAccessToken(token);
    } catch (error) {
      if (error instanceof TokenInvalidError) return null;
      throw error;
    }
    const ttl = claims.expiresAt.getTime() - this.deps.clock.now().getTime();
    if (this.cache && ttl > 0) this.cache.set(key, claims, { ttl });
    return claims;
  }

  private async checkRefreshToken(token: string): Promise<Introspection> {
    const hash = opaqueHash(this.deps.tokenSecret, "refresh", token);
    // Looked up by hash across workspaces, like Refresh; the token says which one it is in.
    const row = await findRefreshTokenState(this.deps.pool, hash);
    const now = this.deps.clock.now().getTime();
    const expiresAt = row ? Math.min(row.expires_at, row.idle_expires_at) : 0;
    if (
      !row ||
      // A grant's refresh token is its client's, used only at the provider's token endpoint:
      // Introspect answers for Keygate's own sessions, as it does for access tokens.
      row.client_id !== null ||
      row.rotated_at !== null ||
      row.revoked_at !== null ||
      expiresAt <= now ||
      row.blocked ||
      row.status !== "active"
    ) {
      return inactive;
    }
    return {
      active: true,
      subject: "user",
      tokenType: "refresh_token",
      sub: row.user_id,
      workspaceId: row.workspace_id,
      sid: row.session_id,
      role: row.role as Role,
      amr: amrOf(row.amr),
      acr: acrOf(row.amr),
      exp: Math.floor(expiresAt / 1000),
      iat: Math.floor(row.created_at / 1000),
      iss: this.deps.issuer,
      aud: [this.deps.audience],
      jti: row.id,
    };
  }

  /** The session a token belongs to, if it is a well-formed token Keygate issued. */
  private async sessionOf(
    token: string,
  ): Promise<{ workspaceId: string; sessionId: string } | null> {
    if (isOpaqueToken("refresh", token)) {
      const hash = opaqueHash(this.deps.tokenSecret, "refresh", token);
      const row = await findRefreshTokenSession(this.deps.pool, hash);
      return row ? { workspaceId: row.workspace_id, sessionId: row.session_id } : null;
    }
    try {
      const claims = await this.deps.tokens.verifyAccessToken(token);
      return { workspaceId: claims.workspaceId, sessionId: claims.sessionId };
    } catch (error) {
      if (error instanceof TokenInvalidError) return null;
      throw error;
    }
  }
}

/**
 * Whether a token has the shape of a client's own (sub = client_id, no role); its signature
 * and claims are checked by verifyClientAccessToken either way.
 */
function isClientToken(token: string): boolean {
  try {
    const claims = decodeJwt(token);
    return (
      typeof claims.client_id === "string" && claims.sub === claims.client_id && !("role" in claims)
    );
  } catch {
    return false;
  }
}

function validTokens(tokens: readonly string[], field: (i: number) => string): void {
  const v = new Violations();
  tokens.forEach((token, i) => {
    v.required(field(i), token, maxTokenLength);
  });
  v.throwIfAny();
}
