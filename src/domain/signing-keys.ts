import { randomUUID } from "node:crypto";
import {
  type CryptoKey,
  calculateJwkThumbprint,
  compactVerify,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  jwtVerify,
  SignJWT,
} from "jose";
import type { DatabasePool, DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { type Clock, systemClock } from "../clock.js";
import { decryptPrivateKey, encryptPrivateKey } from "../crypto/key-encryption.js";
import {
  FailedPreconditionError,
  NotFoundError,
  UnauthenticatedError,
  UnavailableError,
} from "../errors.js";
import type { Logger } from "../log.js";
import {
  findSigningKeyInfo,
  hasActiveSigningKey,
  insertSigningKey,
  listPublishedSigningKeys,
  lockSigningKeys,
  markSigningKeyRevoked,
  promoteNewestNextSigningKey,
  promoteNextSigningKey,
  type SigningKeyInfoRow,
  type SigningKeyPurpose,
  type SigningKeyRow,
  signingKeyRotationState,
} from "../repositories/signing-keys.js";

/**
 * Access tokens (SECURITY.md 5) and the keys that sign them (SECURITY.md 27).
 *
 * Every instance keeps the published keys in memory, imported once per kid, so verification
 * never touches the database. A token whose kid is not known triggers one reload, at most once
 * per second per instance, which is how a key created by another instance is picked up without
 * letting garbage tokens drive database load.
 *
 * Rotation (SECURITY.md 27) needs no scheduler: rotate() only publishes a `next` key. Every
 * load checks for a `next` key published at least signingKeyPromotionDelayMs ago and, under
 * the signing-keys advisory lock, makes it active and retires the old one; whichever instance
 * loads first after the delay does it, the others see the result on their next load. Signing
 * reloads a key set older than signingKeySetMaxAgeMs, so every instance signing tokens takes
 * part, and an instance still signing with the old key for up to that long is covered by the
 * retired key's publication time (retiredKeyPublishMs).
 */

export type JwtAlgorithm = "ES256" | "EdDSA" | "RS256";
export type Role = "owner" | "admin" | "member";

export interface VerifiedAccessToken {
  userId: string;
  workspaceId: string;
  sessionId: string;
  role: Role;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
  kid: string;
  /** RFC 8176 methods; empty for tokens from before they were recorded. */
  amr: string[];
  /** The OAuth client the token was issued to (a grant of the OpenID Provider), or null. */
  clientId: string | null;
  /** The scopes granted to that client (RFC 9068 `scope`); empty otherwise. */
  scopes: string[];
}

/** A client's own access token (client_credentials), checked. */
export interface VerifiedClientAccessToken {
  clientId: string;
  workspaceId: string;
  /** The token's sid: the client's machine_session_id when it was issued. */
  machineSessionId: string;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
  kid: string;
  audience: string;
  scopes: string[];
}

export type TokenInvalidCode =
  | "ERR_JWT_EXPIRED"
  | "ERR_JWT_INVALID"
  | "ERR_JWT_UNKNOWN_KEY"
  | "ERR_JWT_CLAIM_INVALID";

/** Every reason an access token is refused. The message never contains the token. */
export class TokenInvalidError extends UnauthenticatedError {
  readonly code: TokenInvalidCode;
  constructor(code: TokenInvalidCode, message: string) {
    super("UNAUTHENTICATED", message);
    this.code = code;
  }
}

const algorithms: readonly JwtAlgorithm[] = ["ES256", "EdDSA", "RS256"];

export function isJwtAlgorithm(value: string): value is JwtAlgorithm {
  return (algorithms as readonly string[]).includes(value);
}

const tokenType = "at+jwt";
/** The only header members Keygate writes. Anything else (jku, x5u, jwk, x5c, crit, b64…) is refused. */
const headerMembers = new Set(["alg", "kid", "typ"]);
const maxTokenLength = 8192;
const maxTtlSeconds = 86_400;
/** Unknown kids reload the key set at most this often. */
const unknownKidReloadMs = 1_000;
/**
 * Signing reloads a key set older than this, so an instance stops signing with a key that
 * another instance retired. Rotation must keep a retired key published for at least this long
 * plus the longest access token lifetime.
 */
export const signingKeySetMaxAgeMs = 60_000;

/**
 * How long a `next` key is published before it signs: one key-set age for every instance to
 * have reloaded, one more for gateways, whose JWKS answers are cacheable for the same 60 s
 * (src/http/endpoints.ts). A token signed by the new key then never meets a verifier that has
 * not seen its kid (an instance that has not would reload on the unknown kid anyway).
 */
export const signingKeyPromotionDelayMs = 2 * signingKeySetMaxAgeMs;

/**
 * How long a retired key stays published: the longest access-token lifetime any workspace may
 * use (the signer refuses more), plus the key-set age during which another instance may still
 * sign with it before its next reload.
 */
export const retiredKeyPublishMs = maxTtlSeconds * 1000 + signingKeySetMaxAgeMs;

const publicMembers: Record<string, readonly string[]> = {
  EC: ["kty", "crv", "x", "y"],
  OKP: ["kty", "crv", "x"],
  RSA: ["kty", "n", "e"],
};

/** Only the public members of a JWK, whatever the input carries. */
function publicJwkOf(jwk: Record<string, unknown>): Record<string, string> {
  const members = publicMembers[String(jwk.kty)];
  if (!members) throw new Error(`unsupported key type ${String(jwk.kty)}`);
  const out: Record<string, string> = {};
  for (const m of members) {
    const value = jwk[m];
    if (typeof value !== "string") throw new Error(`public key lacks "${m}"`);
    out[m] = value;
  }
  return out;
}

const id = z.string().min(1).max(200);
const claims = z.object({
  sub: id,
  workspace_id: id,
  sid: id,
  role: z.enum(["owner", "admin", "member"]),
  jti: id,
  iat: z.number().int(),
  exp: z.number().int(),
  // Absent from tokens signed before sessions recorded how they were signed in.
  amr: z.array(z.string().max(16)).max(8).optional(),
  // Only in tokens of a grant of the OpenID Provider (RFC 9068 section 2.2).
  client_id: id.optional(),
  scope: z.string().max(1000).optional(),
});
const requiredClaims = ["iss", "aud", "sub", "workspace_id", "sid", "role", "jti", "iat", "exp"];
/** A client's own token (client_credentials): no user, so no role; `role` must be absent. */
const clientClaims = z.object({
  sub: id,
  client_id: id,
  workspace_id: id,
  sid: id,
  role: z.never().optional(),
  jti: id,
  iat: z.number().int(),
  exp: z.number().int(),
  scope: z.string().max(1000),
});
const clientRequiredClaims = [
  "iss",
  "aud",
  "sub",
  "client_id",
  "workspace_id",
  "sid",
  "scope",
  "jti",
  "iat",
  "exp",
];

function claimInvalid(error: z.ZodError): TokenInvalidError {
  const claim = error.issues[0]?.path[0];
  return new TokenInvalidError("ERR_JWT_CLAIM_INVALID", `claim "${String(claim)}" is invalid`);
}

interface PublishedKey {
  readonly kid: string;
  readonly algorithm: JwtAlgorithm;
  readonly publicJwk: Readonly<Record<string, string>>;
  readonly verifyKey: CryptoKey;
  /** Epoch ms after which a retired key is no longer published; null while next or active. */
  readonly unpublishAfter: number | null;
}

interface Signer {
  readonly kid: string;
  readonly algorithm: JwtAlgorithm;
  readonly key: CryptoKey;
}

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
  private readonly pool: DatabasePool;
  private readonly kek: Buffer;
  readonly purpose: SigningKeyPurpose;
  private readonly algorithm: JwtAlgorithm;
  private readonly issuer: string;
  private readonly audience: string;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private published = new Map<string, PublishedKey>();
  private signer: Signer | undefined;
  /** Clock time of the last load attempt, successful or not. */
  private lastLoadAt = Number.NEGATIVE_INFINITY;
  private loading: Promise<void> | undefined;

  private constructor(opts: Options) {
    if (opts.keyEncryptionKey.length !== 32) {
      throw new RangeError(
        `the key-encryption key must be 32 bytes, got ${opts.keyEncryptionKey.length}`,
      );
    }
    if (!algorithms.includes(opts.algorithm)) {
      throw new RangeError(`unsupported signing algorithm ${String(opts.algorithm)}`);
    }
    this.pool = opts.pool;
    this.kek = opts.keyEncryptionKey;
    this.purpose = opts.purpose ?? "access";
    this.algorithm = opts.algorithm;
    this.issuer = opts.issuer;
    this.audience = opts.audience;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
  }

  /**
   * Loads the published keys; on a database without an active key, creates one first. Fails
   * when the active key does not decrypt with the configured key-encryption key.
   */
  static async open(opts: Options): Promise<SigningKeys> {
    const keys = new SigningKeys(opts);
    if (!(await hasActiveSigningKey(opts.pool, keys.purpose))) await keys.createFirstKey();
    await keys.reload();
    if (keys.signer === undefined) throw new Error("no active signing key after creating one");
    if (keys.signer.algorithm !== keys.algorithm) {
      keys.logger.warn(
        { kid: keys.signer.kid, algorithm: keys.signer.algorithm, configured: keys.algorithm },
        "the active signing key's algorithm differs from the configured one; it applies to the next key",
      );
    }
    return keys;
  }

  /**
   * The first key of a deployment goes straight to active: no token exists yet, so no
   * verifier needs to learn it first. The advisory lock makes instances that start together
   * create exactly one.
   */
  private async createFirstKey(): Promise<void> {
    await this.pool.transaction(async (tx) => {
      await lockSigningKeys(tx);
      if (await hasActiveSigningKey(tx, this.purpose)) return;
      const key = await generateSigningKey(this.algorithm);
      await insertSigningKey(tx, {
        kid: key.kid,
        purpose: this.purpose,
        algorithm: this.algorithm,
        publicJwk: key.publicJwk,
        privateKeyEncrypted: encryptPrivateKey(key.privateJwk, this.kek, key.kid),
        status: "active",
        now: this.clock.now(),
      });
      this.logger.info(
        { kid: key.kid, algorithm: this.algorithm, purpose: this.purpose },
        "created the first signing key, active",
      );
    });
  }

  /** The algorithm new keys get when rotation names none. */
  get configuredAlgorithm(): JwtAlgorithm {
    return this.algorithm;
  }

  /**
   * Publishes a new key as `next`: it appears in the JWKS now and signs once it has been
   * published for signingKeyPromotionDelayMs (see the class comment). `inTransaction` runs in
   * the transaction that inserts it (for the audit event). This instance reloads at once, so
   * its JWKS carries the key as soon as the call answers.
   */
  /**
   * Scheduled rotation: publishes a next key when the active one has signed for `maxAgeMs`
   * and no next key is waiting. Decided again under the signing-keys lock, so instances that
   * ask together publish one key. Answers the new key, or null when none was due.
   */
  async rotateIfDue(maxAgeMs: number): Promise<SigningKeyInfoRow | null> {
    const due = (row: { activated_at: number | null; has_next: boolean } | null) =>
      row !== null &&
      !row.has_next &&
      row.activated_at !== null &&
      this.clock.now().getTime() - row.activated_at >= maxAgeMs;
    if (!due(await signingKeyRotationState(this.pool, this.purpose))) return null;
    try {
      return await this.rotate({
        onlyIf: async (tx) => due(await signingKeyRotationState(tx, this.purpose)),
      });
    } catch (error) {
      if (error instanceof NotDue) return null;
      throw error;
    }
  }

  async rotate(options: {
    algorithm?: JwtAlgorithm;
    inTransaction?: (tx: DatabaseTransactionConnection, key: SigningKeyInfoRow) => Promise<void>;
    /** Checked under the lock before inserting; false abandons the rotation. */
    onlyIf?: (tx: DatabaseTransactionConnection) => Promise<boolean>;
  }): Promise<SigningKeyInfoRow> {
    const algorithm = options.algorithm ?? this.algorithm;
    if (!algorithms.includes(algorithm)) {
      throw new RangeError(`unsupported signing algorithm ${String(algorithm)}`);
    }
    // Key generation (RSA especially) happens before the transaction opens.
    const key = await generateSigningKey(algorithm);
    const info = await this.pool.transaction(async (tx) => {
      await lockSigningKeys(tx);
      if (options.onlyIf && !(await options.onlyIf(tx))) throw new NotDue();
      await insertSigningKey(tx, {
        kid: key.kid,
        purpose: this.purpose,
        algorithm,
        publicJwk: key.publicJwk,
        privateKeyEncrypted: encryptPrivateKey(key.privateJwk, this.kek, key.kid),
        status: "next",
        now: this.clock.now(),
      });
      const row = await findSigningKeyInfo(tx, key.kid);
      if (row === null) throw new Error("the inserted signing key is not there");
      await options.inTransaction?.(tx, row);
      return row;
    });
    this.logger.info({ kid: info.kid, algorithm }, "published a next signing key");
    try {
      await this.reload();
    } catch (error) {
      // Committed all the same; the JWKS reloads within a second on its next request.
      this.logger.warn({ err: error }, "could not reload signing keys after a rotation");
    }
    return info;
  }

  /**
   * Revokes a key (SECURITY.md 38): it leaves the key set, and migrations/018's trigger adds
   * the revocation that kills every token it signed wherever the feed is followed. The active
   * key gives way to the newest `next` key at once (FAILED_PRECONDITION when there is none, so
   * that a key always signs); skipping the promotion delay is the price of not signing with a
   * compromised key a moment longer, and verifiers fetch an unknown kid's key on first sight.
   * Instances that still sign with the revoked key reload on its revocation (`onRevoked`).
   * A key revoked already is answered unchanged.
   */
  async revoke(
    kid: string,
    options: {
      inTransaction?: (
        tx: DatabaseTransactionConnection,
        key: SigningKeyInfoRow,
        promoted: string | null,
      ) => Promise<void>;
    } = {},
  ): Promise<{ key: SigningKeyInfoRow; promoted: string | null }> {
    const result = await this.pool.transaction(async (tx) => {
      await lockSigningKeys(tx);
      const before = await findSigningKeyInfo(tx, kid);
      if (before === null || before.purpose !== this.purpose) {
        throw new NotFoundError("no signing key has this kid");
      }
      if (before.status === "revoked") return { key: before, promoted: null, changed: false };
      const now = this.clock.now();
      let promoted: string | null = null;
      if (before.status === "active") {
        promoted = await promoteNewestNextSigningKey(tx, {
          purpose: this.purpose,
          now,
          unpublishAfter: new Date(now.getTime() + retiredKeyPublishMs),
        });
        if (promoted === null) {
          throw new FailedPreconditionError(
            "SIGNING_KEY_ACTIVE",
            "the key signs new tokens and no next key can take over: rotate first",
          );
        }
      }
      await markSigningKeyRevoked(tx, { kid, now });
      const key = await findSigningKeyInfo(tx, kid);
      if (key === null) throw new Error("the revoked signing key is not there");
      await options.inTransaction?.(tx, key, promoted);
      return { key, promoted, changed: true };
    });
    if (result.changed) {
      this.logger.warn({ kid, promoted: result.promoted }, "revoked a signing key");
      await this.onRevoked();
    }
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

  /**
   * Promotes a `next` key published long enough ago, if any; another instance may have done
   * it already. A failure leaves the old key signing, which is safe, and is retried at the
   * next load.
   */
  private async promoteDueKey(now: Date): Promise<boolean> {
    try {
      const kid = await this.pool.transaction(async (tx) => {
        await lockSigningKeys(tx);
        return promoteNextSigningKey(tx, {
          purpose: this.purpose,
          now,
          publishedBefore: new Date(now.getTime() - signingKeyPromotionDelayMs),
          unpublishAfter: new Date(now.getTime() + retiredKeyPublishMs),
        });
      });
      if (kid !== null) this.logger.info({ kid }, "promoted the next signing key to active");
      return true;
    } catch (error) {
      this.logger.warn({ err: error }, "could not promote the next signing key");
      return false;
    }
  }

  /** Reads the published keys from the database (after any load already under way). */
  reload(): Promise<void> {
    const run = (this.loading ?? Promise.resolve()).then(() => this.load());
    // What later callers wait for; it never rejects, the caller of this load gets the error.
    const settled: Promise<void> = run
      .catch(() => {})
      .finally(() => {
        if (this.loading === settled) this.loading = undefined;
      });
    this.loading = settled;
    return run;
  }

  private async load(): Promise<void> {
    const now = this.clock.now();
    this.lastLoadAt = now.getTime();
    let rows = await listPublishedSigningKeys(this.pool, this.purpose, now);
    const due = now.getTime() - signingKeyPromotionDelayMs;
    if (rows.some((r) => r.status === "next" && r.created_at <= due)) {
      if (await this.promoteDueKey(now)) {
        rows = await listPublishedSigningKeys(this.pool, this.purpose, now);
      }
    }
    const published = new Map<string, PublishedKey>();
    let signer: Signer | undefined;
    for (const row of rows) {
      published.set(row.kid, await this.publishedKey(row));
      if (row.status === "active") {
        signer = this.signer?.kid === row.kid ? this.signer : await this.importSigner(row);
      }
    }
    this.published = published;
    this.signer = signer;
  }

  private async publishedKey(row: SigningKeyRow): Promise<PublishedKey> {
    const unpublishAfter = row.status === "retired" ? row.unpublish_after : null;
    const cached = this.published.get(row.kid);
    // A kid is the thumbprint of its public key, so a cached import stays right for it.
    if (cached && cached.algorithm === row.algorithm) return { ...cached, unpublishAfter };
    const publicJwk = publicJwkOf(row.public_jwk);
    const verifyKey = (await importJWK(publicJwk, row.algorithm)) as CryptoKey;
    return { kid: row.kid, algorithm: row.algorithm, publicJwk, verifyKey, unpublishAfter };
  }

  private async importSigner(row: SigningKeyRow): Promise<Signer> {
    const plaintext = decryptPrivateKey(row.private_key_encrypted, this.kek, row.kid);
    const jwk = JSON.parse(plaintext.toString("utf8")) as JWK;
    const key = (await importJWK(jwk, row.algorithm, { extractable: false })) as CryptoKey;
    return { kid: row.kid, algorithm: row.algorithm, key };
  }

  async signAccessToken(input: {
    userId: string;
    workspaceId: string;
    sessionId: string;
    role: Role;
    /** RFC 8176 methods of the session, and the acr that follows from them (none, "1"). */
    amr?: readonly string[];
    acr?: string;
    /** A grant's client and scopes (RFC 9068); absent for Keygate's own sessions. */
    clientId?: string | null;
    scopes?: readonly string[] | null;
    ttlSeconds: number;
    /** iat is made later than this, in whole seconds (a revocation cut-off). */
    issuedAfter?: Date;
    /** iat is this instant (in whole seconds) instead of now: a token as of when its facts were read. */
    issuedAt?: Date;
  }): Promise<{ token: string; jti: string; issuedAt: Date; expiresAt: Date }> {
    if (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds < 1) {
      throw new RangeError("ttlSeconds must be a positive integer");
    }
    if (input.ttlSeconds > maxTtlSeconds) {
      throw new RangeError(`ttlSeconds must be at most ${maxTtlSeconds}`);
    }
    const now = this.clock.now();
    if (now.getTime() - this.lastLoadAt > signingKeySetMaxAgeMs) await this.reload();
    const signer = this.signer;
    if (signer === undefined) throw new UnavailableError("no active signing key");
    let iat = Math.floor((input.issuedAt ?? now).getTime() / 1000);
    if (input.issuedAfter) iat = Math.max(iat, Math.floor(input.issuedAfter.getTime() / 1000) + 1);
    const exp = iat + input.ttlSeconds;
    const jti = randomUUID();
    const token = await new SignJWT({
      workspace_id: input.workspaceId,
      sid: input.sessionId,
      role: input.role,
      amr: [...(input.amr ?? [])],
      acr: input.acr ?? "1",
      ...(input.clientId
        ? { client_id: input.clientId, scope: (input.scopes ?? []).join(" ") }
        : {}),
    })
      .setProtectedHeader({ alg: signer.algorithm, kid: signer.kid, typ: tokenType })
      .setIssuer(this.issuer)
      // A grant's token is for its workspace's provider (userinfo), not for the services that
      // take Keygate's own sessions' tokens: keygate/verify, Introspect and Envoy refuse it.
      .setAudience(input.clientId ? this.providerAudience(input.workspaceId) : this.audience)
      .setSubject(input.userId)
      .setJti(jti)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(signer.key);
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
    if (now.getTime() - this.lastLoadAt > signingKeySetMaxAgeMs) await this.reload();
    const signer = this.signer;
    if (signer === undefined) throw new UnavailableError("no active signing key");
    const iat = Math.floor(now.getTime() / 1000);
    const token = await new SignJWT({ ...input.claims })
      .setProtectedHeader({ alg: signer.algorithm, kid: signer.kid, typ: input.typ ?? "JWT" })
      .setIssuedAt(iat)
      .setExpirationTime(iat + input.ttlSeconds)
      .sign(signer.key);
    return {
      token,
      algorithm: signer.algorithm,
      expiresAt: new Date((iat + input.ttlSeconds) * 1000),
    };
  }

  /**
   * The claims of an ID token this ring signed, expired or not (an id_token_hint at logout may
   * be old): the signature and the issuer are checked, nothing else. Null when it is not one.
   */
  async idTokenHintClaims(token: string, issuer: string): Promise<Record<string, unknown> | null> {
    if (typeof token !== "string" || token.length === 0 || token.length > maxTokenLength)
      return null;
    try {
      const header = decodeProtectedHeader(token);
      if (typeof header.kid !== "string" || header.typ !== "JWT") return null;
      const key = await this.keyFor(header.kid);
      if (key === undefined || header.alg !== key.algorithm) return null;
      const { payload } = await compactVerify(token, key.verifyKey, {
        algorithms: [key.algorithm],
      });
      const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
      return claims.iss === issuer ? claims : null;
    } catch {
      return null;
    }
  }

  /**
   * Checks an access token against the published keys. Every refusal is a TokenInvalidError;
   * only a failed reload for an unknown kid (database down) is an UnavailableError instead,
   * since the token could not be checked.
   */
  /** The audience of a grant's access tokens: the workspace's issuer. */
  providerAudience(workspaceId: string): string {
    return `${this.issuer.replace(/\/+$/, "")}/w/${workspaceId}`;
  }

  async verifyAccessToken(
    token: string,
    options: { audience?: string } = {},
  ): Promise<VerifiedAccessToken> {
    const { payload, kid } = await this.verifiedPayload(
      token,
      options.audience ?? this.audience,
      requiredClaims,
    );
    const parsed = claims.safeParse(payload);
    if (!parsed.success) throw claimInvalid(parsed.error);
    const c = parsed.data;
    return {
      userId: c.sub,
      workspaceId: c.workspace_id,
      sessionId: c.sid,
      role: c.role,
      jti: c.jti,
      issuedAt: new Date(c.iat * 1000),
      expiresAt: new Date(c.exp * 1000),
      kid,
      amr: c.amr ?? [],
      clientId: c.client_id ?? null,
      scopes: c.scope === undefined || c.scope === "" ? [] : c.scope.split(" "),
    };
  }

  /**
   * Signs a client's own access token (client_credentials, RFC 9068 section 2.2): `sub` is
   * the client, there is no user, role, amr or acr, and `sid` is the client's
   * machine_session_id, which its revocation names. The audience is the workspace's issuer,
   * like a grant's.
   */
  async signClientAccessToken(input: {
    clientId: string;
    workspaceId: string;
    machineSessionId: string;
    scopes: readonly string[];
    ttlSeconds: number;
  }): Promise<{ token: string; jti: string; issuedAt: Date; expiresAt: Date }> {
    if (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds < 1) {
      throw new RangeError("ttlSeconds must be a positive integer");
    }
    if (input.ttlSeconds > maxTtlSeconds) {
      throw new RangeError(`ttlSeconds must be at most ${maxTtlSeconds}`);
    }
    const now = this.clock.now();
    if (now.getTime() - this.lastLoadAt > signingKeySetMaxAgeMs) await this.reload();
    const signer = this.signer;
    if (signer === undefined) throw new UnavailableError("no active signing key");
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + input.ttlSeconds;
    const jti = randomUUID();
    const token = await new SignJWT({
      workspace_id: input.workspaceId,
      sid: input.machineSessionId,
      client_id: input.clientId,
      scope: input.scopes.join(" "),
    })
      .setProtectedHeader({ alg: signer.algorithm, kid: signer.kid, typ: tokenType })
      .setIssuer(this.issuer)
      .setAudience(this.providerAudience(input.workspaceId))
      .setSubject(input.clientId)
      .setJti(jti)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(signer.key);
    return { token, jti, issuedAt: new Date(iat * 1000), expiresAt: new Date(exp * 1000) };
  }

  /**
   * Checks a client's own access token (see signClientAccessToken): the same header, key,
   * issuer and expiry checks as verifyAccessToken, the audience of the workspace it names,
   * `sub` equal to `client_id` and no `role`, so that no user's token passes as a client's
   * and no client's as a user's (verifyAccessToken requires `role`).
   */
  async verifyClientAccessToken(token: string): Promise<VerifiedClientAccessToken> {
    let workspaceId: unknown;
    try {
      workspaceId = decodeJwt(token).workspace_id;
    } catch {
      throw new TokenInvalidError("ERR_JWT_INVALID", "malformed access token");
    }
    if (typeof workspaceId !== "string" || !/^[0-9a-f-]{36}$/.test(workspaceId)) {
      throw new TokenInvalidError("ERR_JWT_CLAIM_INVALID", 'claim "workspace_id" is invalid');
    }
    const { payload, kid } = await this.verifiedPayload(
      token,
      this.providerAudience(workspaceId),
      clientRequiredClaims,
    );
    const parsed = clientClaims.safeParse(payload);
    if (!parsed.success) throw claimInvalid(parsed.error);
    const c = parsed.data;
    if (c.sub !== c.client_id || c.workspace_id !== workspaceId) {
      throw new TokenInvalidError("ERR_JWT_CLAIM_INVALID", 'claim "sub" is invalid');
    }
    return {
      clientId: c.client_id,
      workspaceId: c.workspace_id,
      machineSessionId: c.sid,
      jti: c.jti,
      issuedAt: new Date(c.iat * 1000),
      expiresAt: new Date(c.exp * 1000),
      kid,
      audience: this.providerAudience(workspaceId),
      scopes: c.scope === "" ? [] : c.scope.split(" "),
    };
  }

  /** The payload of an access token whose header, key, signature and registered claims hold. */
  private async verifiedPayload(
    token: string,
    audience: string,
    required: readonly string[],
  ): Promise<{ payload: unknown; kid: string }> {
    if (typeof token !== "string" || token.length === 0 || token.length > maxTokenLength) {
      throw new TokenInvalidError("ERR_JWT_INVALID", "malformed access token");
    }
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new TokenInvalidError("ERR_JWT_INVALID", "malformed access token");
    }
    // Checked before any key lookup, so garbage never causes a reload.
    for (const member of Object.keys(header)) {
      if (!headerMembers.has(member)) {
        throw new TokenInvalidError("ERR_JWT_INVALID", `header member "${member}" is not accepted`);
      }
    }
    const alg = header.alg;
    if (typeof alg !== "string" || !algorithms.includes(alg as JwtAlgorithm)) {
      throw new TokenInvalidError("ERR_JWT_INVALID", "algorithm not accepted");
    }
    if (header.typ !== tokenType) {
      throw new TokenInvalidError("ERR_JWT_INVALID", "not an access token");
    }
    const kid = header.kid;
    if (typeof kid !== "string" || kid.length === 0 || kid.length > 100) {
      throw new TokenInvalidError("ERR_JWT_INVALID", "missing or malformed kid");
    }
    const key = await this.keyFor(kid);
    if (key === undefined) {
      throw new TokenInvalidError("ERR_JWT_UNKNOWN_KEY", "unknown signing key");
    }
    if (alg !== key.algorithm) {
      throw new TokenInvalidError("ERR_JWT_INVALID", "algorithm does not match the key");
    }
    const now = this.clock.now();
    try {
      const { payload } = await jwtVerify(token, key.verifyKey, {
        algorithms: [key.algorithm],
        issuer: this.issuer,
        audience,
        typ: tokenType,
        currentDate: now,
        requiredClaims: [...required],
      });
      return { payload, kid };
    } catch (error) {
      throw fromJose(error);
    }
  }

  /** The published key for a kid, reloading once (rate-limited) when it is not known. */
  private async keyFor(kid: string): Promise<PublishedKey | undefined> {
    let key = this.usable(this.published.get(kid));
    if (key !== undefined) return key;
    if (this.loading) {
      await this.loading;
    } else if (this.clock.now().getTime() - this.lastLoadAt >= unknownKidReloadMs) {
      try {
        await this.reload();
      } catch (error) {
        this.logger.warn({ err: error }, "could not reload signing keys for an unknown kid");
        throw new UnavailableError("signing keys could not be loaded, retry later");
      }
    } else {
      return undefined;
    }
    key = this.usable(this.published.get(kid));
    return key;
  }

  private usable(key: PublishedKey | undefined): PublishedKey | undefined {
    if (key?.unpublishAfter != null && this.clock.now().getTime() >= key.unpublishAfter) {
      return undefined;
    }
    return key;
  }

  /** The published public keys (next, active, and retired ones until unpublish_after). */
  async jwks(): Promise<{ keys: object[] }> {
    if (this.clock.now().getTime() - this.lastLoadAt >= unknownKidReloadMs) await this.reload();
    const keys: object[] = [];
    for (const key of this.published.values()) {
      if (this.usable(key) === undefined) continue;
      keys.push({ ...key.publicJwk, kid: key.kid, alg: key.algorithm, use: "sig" });
    }
    return { keys };
  }
}

class NotDue extends Error {}

function fromJose(error: unknown): TokenInvalidError {
  if (error instanceof errors.JWTExpired) {
    return new TokenInvalidError("ERR_JWT_EXPIRED", "access token expired");
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    return new TokenInvalidError("ERR_JWT_CLAIM_INVALID", `claim "${error.claim}" is invalid`);
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return new TokenInvalidError("ERR_JWT_INVALID", "signature verification failed");
  }
  return new TokenInvalidError("ERR_JWT_INVALID", "malformed access token");
}

async function generateSigningKey(algorithm: JwtAlgorithm): Promise<{
  kid: string;
  publicJwk: Record<string, string>;
  privateJwk: Buffer;
}> {
  const { publicKey, privateKey } = await generateKeyPair(algorithm, {
    extractable: true,
    ...(algorithm === "RS256" ? { modulusLength: 2048 } : {}),
  });
  const publicJwk = publicJwkOf(await exportJWK(publicKey));
  const kid = await calculateJwkThumbprint(publicJwk, "sha256");
  const privateJwk = Buffer.from(JSON.stringify(await exportJWK(privateKey)), "utf8");
  return { kid, publicJwk, privateJwk };
}
