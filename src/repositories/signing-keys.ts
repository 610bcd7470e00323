import type { CommonQueryMethods, DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/** Signing keys are deployment-wide (not tenant-owned), so nothing here takes a workspace. */

export const signingKeyAlgorithm = z.enum(["ES256", "EdDSA", "RS256"]);
export const signingKeyStatus = z.enum(["next", "active", "retired"]);

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
  now: Date,
): Promise<readonly SigningKeyRow[]> {
  return db.any(sql.type(signingKeyRow)`
    SELECT kid, algorithm, public_jwk, private_key_encrypted, status, created_at, activated_at,
           retired_at, unpublish_after
    FROM signing_keys
    WHERE status IN ('next', 'active')
       OR (status = 'retired' AND unpublish_after > ${sql.timestamp(now)})
    ORDER BY created_at, kid`);
}

export async function hasActiveSigningKey(db: CommonQueryMethods): Promise<boolean> {
  return db.exists(sql.type(z.object({ kid: z.string() }))`
    SELECT kid FROM signing_keys WHERE status = 'active'`);
}

export async function insertSigningKey(
  db: CommonQueryMethods,
  input: {
    kid: string;
    algorithm: z.infer<typeof signingKeyAlgorithm>;
    publicJwk: Record<string, string>;
    privateKeyEncrypted: Buffer;
    status: "next" | "active";
    now: Date;
  },
): Promise<void> {
  const activatedAt = input.status === "active" ? sql.timestamp(input.now) : null;
  await db.query(sql.type(voidRow)`
    INSERT INTO signing_keys (kid, algorithm, public_jwk, private_key_encrypted, status,
                              created_at, activated_at)
    VALUES (${input.kid}, ${input.algorithm}, ${sql.jsonb(input.publicJwk)},
            ${sql.binary(input.privateKeyEncrypted)}, ${input.status},
            ${sql.timestamp(input.now)}, ${activatedAt})`);
}
