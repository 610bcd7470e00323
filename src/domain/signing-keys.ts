import { randomUUID } from "node:crypto";
import { decodeJwt } from "jose";
import type { DatabasePool } from "slonik";
import { type Clock, systemClock } from "../clock.js";
import { idTokenClaims, idTokenKeyHint, signIdJwt } from "../crypto/id-jwt.js";
import {
  type AccessTokenClaims,
  accessTokenKeyHint,
  signAccessJwt,
  signClientJwt,
  TokenInvalidError,
  type VerifiedAccessToken,
  type VerifiedClientAccessToken,
  verifyAccessJwt,
  verifyClientJwt,
} from "../crypto/jwt.js";
import { type JwtAlgorithm, jwtAlgorithms } from "../crypto/jwt-keys.js";
import type { Logger } from "../log.js";
import type { SigningKeyInfoRow, SigningKeyPurpose } from "../repositories/signing-keys.js";
import { type PublishedKey, PublishedKeys } from "./published-keys.js";
import {
  maxAccessTokenTtlSeconds,
  type PublishHook,
  type RevokeHook,
  SigningKeyRotation,
} from "./signing-key-rotation.js";

/**
 * The key ring of one purpose (SECURITY.md 27): the keys that sign access tokens, or the
 * OpenID Provider's ID tokens, as this instance holds them.
 *
 * Every instance keeps the published keys in memory, imported once per kid, so verification
 * never touches the database. A token whose kid is not known triggers one reload, at most once
 * per second per instance, which is how a key created by another instance is picked up without
 * letting garbage tokens drive database load. How keys are published, promoted and retired is
 * src/domain/signing-key-rotation.ts; each load takes part in it.
 */

interface Options {
  pool: DatabasePool;
  keyEncryptionKey: Buffer;
  /**
   * What this ring signs (default access tokens). Each purpose has its own keys, active key
   * and rotation; the JWKS publishes all of them, and only access keys verify access tokens.
   */
  purpose?: SigningKeyPurpose;
  algorithm: JwtAlgorithm;
  issuer: string;
  audience: string;
  clock?: Clock;
  logger: Logger;
}

export class SigningKeys {
  readonly purpose: SigningKeyPurpose;
  private readonly algorithm: JwtAlgorithm;
  private readonly issuer: string;
  private readonly audience: string;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly rotation: SigningKeyRotation;
  private readonly keys: PublishedKeys;

  private constructor(opts: Options) {
    if (opts.keyEncryptionKey.length !== 32) {
      throw new RangeError(
        `the key-encryption key must be 32 bytes, got ${opts.keyEncryptionKey.length}`,
      );
    }
    if (!jwtAlgorithms.includes(opts.algorithm)) {
      throw new RangeError(`unsupported signing algorithm ${String(opts.algorithm)}`);
    }
    this.purpose = opts.purpose ?? "access";
    this.algorithm = opts.algorithm;
    this.issuer = opts.issuer;
    this.audience = opts.audience;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.rotation = new SigningKeyRotation({ ...opts, purpose: this.purpose, clock: this.clock });
    this.keys = new PublishedKeys({
      pool: opts.pool,
      keyEncryptionKey: opts.keyEncryptionKey,
      purpose: this.purpose,
      clock: this.clock,
      logger: opts.logger,
      rotation: this.rotation,
    });
  }

  /** Reads the published keys from the database (after any load already under way). */
  reload(): Promise<void> {
    return this.keys.reload();
  }

  /** The published public keys (next, active, and retired ones until unpublish_after). */
  jwks(): Promise<{ keys: object[] }> {
    return this.keys.jwks();
  }

  /**
   * Loads the published keys; on a database without an active key, creates one first. Fails
   * when the active key does not decrypt with the configured key-encryption key.
   */
  static async open(opts: Options): Promise<SigningKeys> {
    const keys = new SigningKeys(opts);
    await keys.rotation.createFirstKeyIfNone(keys.algorithm);
    await keys.reload();
    const signer = keys.keys.active;
    if (signer === undefined) throw new Error("no active signing key after creating one");
    if (signer.algorithm !== keys.algorithm) {
      keys.logger.warn(
        { kid: signer.kid, algorithm: signer.algorithm, configured: keys.algorithm },
        "the active signing key's algorithm differs from the configured one; it applies to the next key",
      );
    }
    return keys;
  }

  /** The algorithm new keys get when rotation names none. */
  get configuredAlgorithm(): JwtAlgorithm {
    return this.algorithm;
  }

  /** Scheduled rotation (SigningKeyRotation.publishNextIfDue), then a reload if a key came. */
  async rotateIfDue(maxAgeMs: number): Promise<SigningKeyInfoRow | null> {
    const info = await this.rotation.publishNextIfDue(this.algorithm, maxAgeMs);
    if (info !== null) await this.reloadAfterRotation();
    return info;
  }

  /**
   * Publishes a new key as `next` (SigningKeyRotation.publishNext). This instance reloads at
   * once, so its JWKS carries the key as soon as the call answers.
   */
  async rotate(options: {
    algorithm?: JwtAlgorithm;
    inTransaction?: PublishHook;
  }): Promise<SigningKeyInfoRow> {
    const algorithm = options.algorithm ?? this.algorithm;
    const info = await this.rotation.publishNext({ ...options, algorithm });
    await this.reloadAfterRotation();
    return info;
  }

  private async reloadAfterRotation(): Promise<void> {
    try {
      await this.reload();
    } catch (error) {
      // Committed all the same; the JWKS reloads within a second on its next request.
      this.logger.warn({ err: error }, "could not reload signing keys after a rotation");
    }
  }

  /**
   * Revokes a key (SigningKeyRotation.revoke). Instances that still sign with the revoked key
   * reload on its revocation (`onRevoked`), this one at once.
   */
  async revoke(
    kid: string,
    options: { inTransaction?: RevokeHook } = {},
  ): Promise<{ key: SigningKeyInfoRow; promoted: string | null }> {
    const result = await this.rotation.revoke(kid, options);
    if (result.changed) await this.onRevoked();
    return { key: result.key, promoted: result.promoted };
  }

  /**
   * A signing key was revoked (here or on another instance, as the revocation feed tells):
   * reload, so that this instance stops signing with it and drops it from its JWKS at once.
   */
  async onRevoked(): Promise<void> {
    try {
      await this.reload();
    } catch (error) {
      // The revocation holds through the feed; signing reloads within signingKeySetMaxAgeMs.
      this.logger.warn({ err: error }, "could not reload signing keys after a revocation");
    }
  }

  async signAccessToken(
    input: AccessTokenClaims & {
      ttlSeconds: number;
      /** iat is made later than this, in whole seconds (a revocation cut-off). */
      issuedAfter?: Date;
      /** iat is this instant (in whole seconds) instead of now: a token as of when its facts were read. */
      issuedAt?: Date;
    },
  ): Promise<{ token: string; jti: string; issuedAt: Date; expiresAt: Date }> {
    const { ttlSeconds, issuedAfter, issuedAt, ...claims } = input;
    checkTtl(ttlSeconds);
    const now = this.clock.now();
    const signer = await this.keys.currentSigner(now);
    let iat = Math.floor((issuedAt ?? now).getTime() / 1000);
    if (issuedAfter) iat = Math.max(iat, Math.floor(issuedAfter.getTime() / 1000) + 1);
    const exp = iat + ttlSeconds;
    const jti = randomUUID();
    const token = await signAccessJwt(signer, {
      ...claims,
      // A grant's token comes from its workspace's provider (RFC 9068: iss is the issuer its
      // metadata names) and is for that provider's userinfo, or for the resources it was
      // granted for; never for the services that take Keygate's own sessions' tokens
      // (keygate/verify without a resource, Introspect and Envoy refuse it).
      issuer: claims.clientId ? this.providerAudience(claims.workspaceId) : this.issuer,
      audience: claims.clientId ? this.grantAudience(claims) : this.audience,
      jti,
      issuedAt: iat,
      expiresAt: exp,
    });
    return { token, jti, issuedAt: new Date(iat * 1000), expiresAt: new Date(exp * 1000) };
  }

  /**
   * Signs an OpenID Connect ID token with this ring's active key (the `id_token` ring: RS256
   * unless configured otherwise). The caller gives every claim but iat and exp.
   */
  async signIdToken(input: {
    claims: Record<string, unknown>;
    ttlSeconds: number;
    /** The JWT's typ: "JWT" for ID tokens, "logout+jwt" for back-channel logout tokens. */
    typ?: string;
  }): Promise<{ token: string; algorithm: JwtAlgorithm; expiresAt: Date }> {
    if (this.purpose !== "id_token") throw new Error("this key ring does not sign ID tokens");
    const now = this.clock.now();
    const signer = await this.keys.currentSigner(now);
    const iat = Math.floor(now.getTime() / 1000);
    const token = await signIdJwt(signer, {
      claims: input.claims,
      typ: input.typ ?? "JWT",
      issuedAt: iat,
      expiresAt: iat + input.ttlSeconds,
    });
    return {
      token,
      algorithm: signer.algorithm,
      expiresAt: new Date((iat + input.ttlSeconds) * 1000),
    };
  }

  /**
   * The claims of an ID token this ring signed, expired or not (an id_token_hint at logout may
   * be old): the signature and the issuer are checked, nothing else. Null when it is not one,
   * or when its kid is unknown and the keys could not be reloaded.
   */
  async idTokenHintClaims(token: string, issuer: string): Promise<Record<string, unknown> | null> {
    const hint = idTokenKeyHint(token);
    if (hint === null) return null;
    let key: PublishedKey | undefined;
    try {
      key = await this.keys.keyFor(hint.kid);
    } catch {
      return null;
    }
    return key === undefined ? null : idTokenClaims(token, hint, key, issuer);
  }

  /** The issuer, and default audience, of a grant's access tokens: the workspace's provider. */
  providerAudience(workspaceId: string): string {
    return `${this.issuer.replace(/\/+$/, "")}/w/${workspaceId}`;
  }

  /**
   * A grant's audience: its resources, with the provider itself when the grant has openid
   * (so the client can still call userinfo); the provider alone when it names no resource.
   */
  private grantAudience(input: {
    workspaceId: string;
    scopes?: readonly string[] | null;
    resources?: readonly string[] | null;
  }): string | string[] {
    const provider = this.providerAudience(input.workspaceId);
    const resources = input.resources ?? [];
    if (resources.length === 0) return provider;
    const audience = [...resources];
    if ((input.scopes ?? []).includes("openid")) audience.push(provider);
    return audience.length === 1 ? (audience[0] as string) : audience;
  }

  /**
   * Checks an access token against the published keys. Every refusal is a TokenInvalidError;
   * only a failed reload for an unknown kid (database down) is an UnavailableError instead,
   * since the token could not be checked. `provider`: a grant's token, checked against that
   * provider's issuer (as iss, and as aud unless `resource` names the audience) instead of
   * Keygate's own issuer and audience.
   */
  async verifyAccessToken(
    token: string,
    options: { provider?: string; resource?: string } = {},
  ): Promise<VerifiedAccessToken> {
    const hint = accessTokenKeyHint(token);
    const key = await this.keys.keyFor(hint.kid);
    if (key === undefined) {
      throw new TokenInvalidError("ERR_JWT_UNKNOWN_KEY", "unknown signing key");
    }
    return verifyAccessJwt(token, hint, key, {
      issuer: options.provider ?? this.issuer,
      audience: options.resource ?? options.provider ?? this.audience,
      currentDate: this.clock.now(),
    });
  }

  /**
   * Signs a client's own access token (client_credentials): no user; `sid` is the client's
   * machine_session_id, which its revocation names. The issuer is the workspace's provider,
   * as for a grant's tokens, and so is the audience unless the client asked for resources
   * (RFC 8707), which then are the audience: Keygate's own RPCs and services refuse it either
   * way.
   */
  async signClientAccessToken(input: {
    clientId: string;
    workspaceId: string;
    machineSessionId: string;
    scopes: readonly string[];
    resources?: readonly string[];
    ttlSeconds: number;
  }): Promise<{ token: string; jti: string; issuedAt: Date; expiresAt: Date }> {
    const { resources = [], ttlSeconds, ...claims } = input;
    checkTtl(ttlSeconds);
    const now = this.clock.now();
    const signer = await this.keys.currentSigner(now);
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + ttlSeconds;
    const jti = randomUUID();
    const provider = this.providerAudience(input.workspaceId);
    const token = await signClientJwt(signer, {
      ...claims,
      issuer: provider,
      audience:
        resources.length === 0
          ? provider
          : resources.length === 1
            ? (resources[0] as string)
            : [...resources],
      jti,
      issuedAt: iat,
      expiresAt: exp,
    });
    return { token, jti, issuedAt: new Date(iat * 1000), expiresAt: new Date(exp * 1000) };
  }

  /**
   * Checks a bearer token for whoever accepts it: without a resource, one of Keygate's own
   * sessions' tokens, or a client's own token for its workspace's provider; with a resource
   * (RFC 8707), a token a workspace's provider issued for that resource: a grant's (a user's,
   * through a client) or a client's own. A token of one kind never passes for the other: a
   * client's has `sub` = `client_id` and no role, a user's always has a role. Refusals are
   * TokenInvalidErrors, as with verifyAccessToken.
   */
  async verifyBearerToken(token: string, resource: string | null): Promise<CheckedToken> {
    const hint = accessTokenKeyHint(token);
    let claims: ReturnType<typeof decodeJwt>;
    try {
      claims = decodeJwt(token);
    } catch {
      throw new TokenInvalidError("ERR_JWT_INVALID", "malformed access token");
    }
    const client =
      typeof claims.client_id === "string" &&
      claims.sub === claims.client_id &&
      !("role" in claims);
    if (!client && resource === null) {
      return { kind: "user", claims: await this.verifyAccessToken(token) };
    }
    const workspaceId = claims.workspace_id;
    if (typeof workspaceId !== "string" || !/^[0-9a-f-]{36}$/.test(workspaceId)) {
      throw new TokenInvalidError("ERR_JWT_CLAIM_INVALID", 'claim "workspace_id" is invalid');
    }
    const provider = this.providerAudience(workspaceId);
    if (!client) {
      const user = await this.verifyAccessToken(token, {
        provider,
        resource: resource ?? provider,
      });
      if (user.clientId === null) {
        throw new TokenInvalidError("ERR_JWT_CLAIM_INVALID", 'claim "client_id" is missing');
      }
      return { kind: "user", claims: user };
    }
    const key = await this.keys.keyFor(hint.kid);
    if (key === undefined) {
      throw new TokenInvalidError("ERR_JWT_UNKNOWN_KEY", "unknown signing key");
    }
    const checked = await verifyClientJwt(token, hint, key, {
      issuer: provider,
      audience: resource ?? provider,
      workspaceId,
      currentDate: this.clock.now(),
    });
    return { kind: "client", claims: checked };
  }
}

/** A bearer token, checked: a user's (a session's or a grant's) or a client's own. */
export type CheckedToken =
  | { readonly kind: "user"; readonly claims: VerifiedAccessToken }
  | { readonly kind: "client"; readonly claims: VerifiedClientAccessToken };

/** An access token lives a whole number of seconds, at most maxAccessTokenTtlSeconds. */
function checkTtl(ttlSeconds: number): void {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new RangeError("ttlSeconds must be a positive integer");
  }
  if (ttlSeconds > maxAccessTokenTtlSeconds) {
    throw new RangeError(`ttlSeconds must be at most ${maxAccessTokenTtlSeconds}`);
  }
}
