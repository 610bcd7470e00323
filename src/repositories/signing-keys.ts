import type { CommonQueryMethods, DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

const kidRow = z.object({ kid: z.string() });

/** Signing keys are deployment-wide (not tenant-owned), so nothing here takes a workspace. */

export const signingKeyAlgorithm = z.enum(["ES256", "EdDSA", "RS256"]);
export const signingKeyStatus = z.enum(["next", "active", "retired", "revoked"]);
/** What a key signs: access tokens, or the OpenID Provider's ID tokens (RS256 by default). */
export type SigningKeyPurpose = "access" | "id_token";

export const signingKeyRow = z.object({
  kid: z.string(),
  algorithm: signingKeyAlgorithm,
  public_jwk: z.record(z.string(), z.unknown()),
  private_key_encrypted: z.instanceof(Buffer),
  status: signingKeyStatus,
  created_at: z.number(),
  activated_at: z.number().nullable(),
  retired_at: z.number().nullable(),
  unpublish_after: z.number().nullable(),
  revoked_at: z.number().nullable(),
});
export type SigningKeyRow = z.infer<typeof signingKeyRow>;

const lockRow = z.object({ locked: z.boolean() });

// Any constant works as long as every instance uses the same one: "kg-sign" in ASCII. Distinct
// from the migrations' lock.
const signingKeysLockKey = "30231267415517038";

/**
 * Serialises key creation and rotation across instances until the transaction ends. On the
 * embedded database (one backend) it never blocks, but pglite-socket already runs whole
 * transactions one after another there.
 */
export async function lockSigningKeys(tx: DatabaseTransactionConnection): Promise<void> {
  await tx.one(sql.type(lockRow)`
    SELECT pg_advisory_xact_lock(${signingKeysLockKey}::bigint) IS NULL AS locked`);
}

/** The keys in the JWKS at `now`: next, active, and retired ones until unpublish_after. */
export async function listPublishedSigningKeys(
  db: CommonQueryMethods,
  purpose: SigningKeyPurpose,
  now: Date,
): Promise<readonly SigningKeyRow[]> {
  return db.any(sql.type(signingKeyRow)`
    SELECT kid, algorithm, public_jwk, private_key_encrypted, status, created_at, activated_at,
           retired_at, unpublish_after, revoked_at
    FROM signing_keys
    WHERE purpose = ${purpose}
      AND (status IN ('next', 'active')
           OR (status = 'retired' AND unpublish_after > ${sql.timestamp(now)}))
    ORDER BY created_at, kid`);
}

export async function hasActiveSigningKey(
  db: CommonQueryMethods,
  purpose: SigningKeyPurpose,
): Promise<boolean> {
  return db.exists(sql.type(kidRow)`
    SELECT kid FROM signing_keys WHERE status = 'active' AND purpose = ${purpose}`);
}

const rotationStateRow = z.object({ activated_at: z.number().nullable(), has_next: z.boolean() });

/** When the active key of a purpose began signing, and whether a next key is waiting. */
export async function signingKeyRotationState(
  db: CommonQueryMethods,
  purpose: SigningKeyPurpose,
): Promise<z.infer<typeof rotationStateRow> | null> {
  return db.maybeOne(sql.type(rotationStateRow)`
    SELECT (SELECT activated_at FROM signing_keys WHERE status = 'active' AND purpose = ${purpose}) AS activated_at,
           EXISTS (SELECT 1 FROM signing_keys WHERE status = 'next' AND purpose = ${purpose}) AS has_next`);
}

export async function insertSigningKey(
  db: CommonQueryMethods,
  input: {
    kid: string;
    purpose: SigningKeyPurpose;
    algorithm: z.infer<typeof signingKeyAlgorithm>;
    publicJwk: Record<string, string>;
    privateKeyEncrypted: Buffer;
    status: "next" | "active";
    now: Date;
  },
): Promise<void> {
  const activatedAt = input.status === "active" ? sql.timestamp(input.now) : null;
  await db.query(sql.type(voidRow)`
    INSERT INTO signing_keys (kid, purpose, algorithm, public_jwk, private_key_encrypted, status,
                              created_at, activated_at)
    VALUES (${input.kid}, ${input.purpose}, ${input.algorithm}, ${sql.jsonb(input.publicJwk)},
            ${sql.binary(input.privateKeyEncrypted)}, ${input.status},
            ${sql.timestamp(input.now)}, ${activatedAt})`);
}

/** What may leave the service about a key: everything but the private part. */
export const signingKeyInfoRow = signingKeyRow
  .omit({ private_key_encrypted: true, public_jwk: true })
  .extend({ purpose: z.enum(["access", "id_token"]) });
export type SigningKeyInfoRow = z.infer<typeof signingKeyInfoRow>;

/** Every key ever created, unpublished ones included, oldest first; never the private part. */
export async function listAllSigningKeys(
  db: CommonQueryMethods,
): Promise<readonly SigningKeyInfoRow[]> {
  return db.any(sql.type(signingKeyInfoRow)`
    SELECT kid, purpose, algorithm, status, created_at, activated_at, retired_at, unpublish_after,
           revoked_at
    FROM signing_keys
    ORDER BY created_at, kid`);
}

export async function findSigningKeyInfo(
  db: CommonQueryMethods,
  kid: string,
): Promise<SigningKeyInfoRow | null> {
  return db.maybeOne(sql.type(signingKeyInfoRow)`
    SELECT kid, purpose, algorithm, status, created_at, activated_at, retired_at, unpublish_after,
           revoked_at
    FROM signing_keys WHERE kid = ${kid}`);
}

/**
 * Revokes a key: it leaves the key set and the trigger of migrations/018 writes the
 * revocation that kills every token it signed. Run under lockSigningKeys; answers false when
 * the key was revoked already.
 */
export async function markSigningKeyRevoked(
  tx: DatabaseTransactionConnection,
  input: { kid: string; now: Date },
): Promise<boolean> {
  const result = await tx.query(sql.type(voidRow)`
    UPDATE signing_keys SET status = 'revoked', revoked_at = ${sql.timestamp(input.now)}
    WHERE kid = ${input.kid} AND status <> 'revoked'`);
  return result.rowCount > 0;
}

/**
 * Makes the newest `next` key active at once, however briefly it has been published, and
 * retires the active key (published until `unpublishAfter`). Run under lockSigningKeys;
 * answers the promoted kid, or null when there is no next key.
 */
export async function promoteNewestNextSigningKey(
  tx: DatabaseTransactionConnection,
  input: { purpose: SigningKeyPurpose; now: Date; unpublishAfter: Date },
): Promise<string | null> {
  return promoteNextSigningKey(tx, { ...input, publishedBefore: input.now });
}

/**
 * Makes the newest `next` key published at or before `publishedBefore` the active one: the
 * active key retires (published until `unpublishAfter`), older `next` keys that were superseded
 * before they ever signed leave the key set at once. Run under lockSigningKeys; answers the
 * promoted kid, or null when there was nothing to promote (another instance already did).
 */
export async function promoteNextSigningKey(
  tx: DatabaseTransactionConnection,
  input: { purpose: SigningKeyPurpose; now: Date; publishedBefore: Date; unpublishAfter: Date },
): Promise<string | null> {
  const purpose = input.purpose;
  const kid = await tx.maybeOneFirst(sql.type(kidRow)`
    SELECT kid FROM signing_keys
    WHERE status = 'next' AND purpose = ${purpose} AND created_at <= ${sql.timestamp(input.publishedBefore)}
    ORDER BY created_at DESC, kid DESC
    LIMIT 1`);
  if (kid === null) return null;
  const now = sql.timestamp(input.now);
  await tx.query(sql.type(voidRow)`
    UPDATE signing_keys
    SET status = 'retired', retired_at = ${now}, unpublish_after = ${sql.timestamp(input.unpublishAfter)}
    WHERE status = 'active' AND purpose = ${purpose}`);
  await tx.query(sql.type(voidRow)`
    UPDATE signing_keys
    SET status = 'retired', retired_at = ${now}, unpublish_after = ${now}
    WHERE status = 'next' AND purpose = ${purpose} AND kid <> ${kid} AND created_at <= ${sql.timestamp(input.publishedBefore)}`);
  await tx.query(sql.type(voidRow)`
    UPDATE signing_keys SET status = 'active', activated_at = ${now} WHERE kid = ${kid}`);
  return kid;
}
