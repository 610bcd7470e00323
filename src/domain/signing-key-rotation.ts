import type { DatabasePool, DatabaseTransactionConnection } from "slonik";
import type { Clock } from "../clock.js";
import { generateSigningKey, type JwtAlgorithm, jwtAlgorithms } from "../crypto/jwt-keys.js";
import { FailedPreconditionError, NotFoundError } from "../errors.js";
import type { Logger } from "../log.js";
import {
  findSigningKeyInfo,
  hasActiveSigningKey,
  insertSigningKey,
  lockSigningKeys,
  markSigningKeyRevoked,
  promoteNewestNextSigningKey,
  promoteNextSigningKey,
  type SigningKeyInfoRow,
  type SigningKeyPurpose,
  signingKeyRotationState,
} from "../repositories/signing-keys.js";

/**
 * How a purpose's keys move from `next` to `active` to `retired` (SECURITY.md 27), in the
 * database, under the signing-keys advisory lock. What one instance holds in memory, and when
 * it reloads, is the key ring's (src/domain/signing-keys.ts).
 *
 * Rotation needs no scheduler: publishing a key only makes it `next`. Every load of a ring
 * checks for a `next` key published at least signingKeyPromotionDelayMs ago and promotes it
 * here, retiring the old one; whichever instance loads first after the delay does it, the
 * others see the result on their next load. Signing reloads a key set older than
 * signingKeySetMaxAgeMs, so every instance signing tokens takes part, and an instance still
 * signing with the old key for up to that long is covered by the retired key's publication
 * time (retiredKeyPublishMs).
 */

/** The longest access-token lifetime the signer accepts. */
export const maxAccessTokenTtlSeconds = 86_400;

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
export const retiredKeyPublishMs = maxAccessTokenTtlSeconds * 1000 + signingKeySetMaxAgeMs;

/** Runs in the transaction that publishes a key (for the audit event). */
export type PublishHook = (
  tx: DatabaseTransactionConnection,
  key: SigningKeyInfoRow,
) => Promise<void>;
/** Runs in the transaction that revokes a key; `promoted` is the kid that took over, if any. */
export type RevokeHook = (
  tx: DatabaseTransactionConnection,
  key: SigningKeyInfoRow,
  promoted: string | null,
) => Promise<void>;

export class SigningKeyRotation {
  constructor(
    private readonly deps: {
      readonly pool: DatabasePool;
      readonly keyEncryptionKey: Buffer;
      readonly purpose: SigningKeyPurpose;
      readonly clock: Clock;
      readonly logger: Logger;
    },
  ) {}

  /**
   * The first key of a deployment goes straight to active: no token exists yet, so no
   * verifier needs to learn it first. The advisory lock makes instances that start together
   * create exactly one.
   */
  async createFirstKeyIfNone(algorithm: JwtAlgorithm): Promise<void> {
    const { pool, purpose } = this.deps;
    if (await hasActiveSigningKey(pool, purpose)) return;
    await pool.transaction(async (tx) => {
      await lockSigningKeys(tx);
      if (await hasActiveSigningKey(tx, purpose)) return;
      const key = await generateSigningKey(algorithm, this.deps.keyEncryptionKey);
      await this.insert(tx, key, algorithm, "active");
      this.deps.logger.info(
        { kid: key.kid, algorithm, purpose },
        "created the first signing key, active",
      );
    });
  }

  /**
   * Publishes a new key as `next`: it appears in the JWKS now and signs once it has been
   * published for signingKeyPromotionDelayMs.
   */
  async publishNext(options: {
    algorithm: JwtAlgorithm;
    inTransaction?: PublishHook;
    /** Checked under the lock before inserting; false abandons the rotation (NotDue). */
    onlyIf?: (tx: DatabaseTransactionConnection) => Promise<boolean>;
  }): Promise<SigningKeyInfoRow> {
    const { algorithm } = options;
    if (!jwtAlgorithms.includes(algorithm)) {
      throw new RangeError(`unsupported signing algorithm ${String(algorithm)}`);
    }
    // Key generation (RSA especially) happens before the transaction opens.
    const key = await generateSigningKey(algorithm, this.deps.keyEncryptionKey);
    const info = await this.deps.pool.transaction(async (tx) => {
      await lockSigningKeys(tx);
      if (options.onlyIf && !(await options.onlyIf(tx))) throw new NotDue();
      await this.insert(tx, key, algorithm, "next");
      const row = await findSigningKeyInfo(tx, key.kid);
      if (row === null) throw new Error("the inserted signing key is not there");
      await options.inTransaction?.(tx, row);
      return row;
    });
    this.deps.logger.info({ kid: info.kid, algorithm }, "published a next signing key");
    return info;
  }

  /**
   * Scheduled rotation: publishes a next key when the active one has signed for `maxAgeMs`
   * and no next key is waiting. Decided again under the signing-keys lock, so instances that
   * ask together publish one key. Answers the new key, or null when none was due.
   */
  async publishNextIfDue(
    algorithm: JwtAlgorithm,
    maxAgeMs: number,
  ): Promise<SigningKeyInfoRow | null> {
    const { pool, purpose, clock } = this.deps;
    const due = (row: { activated_at: number | null; has_next: boolean } | null) =>
      row !== null &&
      !row.has_next &&
      row.activated_at !== null &&
      clock.now().getTime() - row.activated_at >= maxAgeMs;
    if (!due(await signingKeyRotationState(pool, purpose))) return null;
    try {
      return await this.publishNext({
        algorithm,
        onlyIf: async (tx) => due(await signingKeyRotationState(tx, purpose)),
      });
    } catch (error) {
      if (error instanceof NotDue) return null;
      throw error;
    }
  }

  /**
   * Promotes a `next` key published long enough ago, if the loaded `rows` show one; another
   * instance may have done it already. Answers whether the rows should be read again. A
   * failure leaves the old key signing, which is safe, and is retried at the next load.
   */
  async promoteDueKey(
    rows: readonly { status: string; created_at: number }[],
    now: Date,
  ): Promise<boolean> {
    const due = now.getTime() - signingKeyPromotionDelayMs;
    if (!rows.some((r) => r.status === "next" && r.created_at <= due)) return false;
    try {
      const kid = await this.deps.pool.transaction(async (tx) => {
        await lockSigningKeys(tx);
        return promoteNextSigningKey(tx, {
          purpose: this.deps.purpose,
          now,
          publishedBefore: new Date(now.getTime() - signingKeyPromotionDelayMs),
          unpublishAfter: new Date(now.getTime() + retiredKeyPublishMs),
        });
      });
      if (kid !== null) this.deps.logger.info({ kid }, "promoted the next signing key to active");
      return true;
    } catch (error) {
      this.deps.logger.warn({ err: error }, "could not promote the next signing key");
      return false;
    }
  }

  /**
   * Revokes a key (SECURITY.md 38): it leaves the key set, and migrations/018's trigger adds
   * the revocation that kills every token it signed wherever the feed is followed. The active
   * key gives way to the newest `next` key at once (FAILED_PRECONDITION when there is none, so
   * that a key always signs); skipping the promotion delay is the price of not signing with a
   * compromised key a moment longer, and verifiers fetch an unknown kid's key on first sight.
   * A key revoked already is answered unchanged (`changed` false).
   */
  async revoke(
    kid: string,
    options: { inTransaction?: RevokeHook },
  ): Promise<{ key: SigningKeyInfoRow; promoted: string | null; changed: boolean }> {
    const { purpose, clock } = this.deps;
    const result = await this.deps.pool.transaction(async (tx) => {
      await lockSigningKeys(tx);
      const before = await findSigningKeyInfo(tx, kid);
      if (before === null || before.purpose !== purpose) {
        throw new NotFoundError("no signing key has this kid");
      }
      if (before.status === "revoked") return { key: before, promoted: null, changed: false };
      const now = clock.now();
      let promoted: string | null = null;
      if (before.status === "active") {
        promoted = await promoteNewestNextSigningKey(tx, {
          purpose,
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
      this.deps.logger.warn({ kid, promoted: result.promoted }, "revoked a signing key");
    }
    return result;
  }

  private insert(
    tx: DatabaseTransactionConnection,
    key: Awaited<ReturnType<typeof generateSigningKey>>,
    algorithm: JwtAlgorithm,
    status: "next" | "active",
  ): Promise<void> {
    return insertSigningKey(tx, {
      kid: key.kid,
      purpose: this.deps.purpose,
      algorithm,
      publicJwk: key.publicJwk,
      privateKeyEncrypted: key.privateKeyEncrypted,
      status,
      now: this.deps.clock.now(),
    });
  }
}

class NotDue extends Error {}
