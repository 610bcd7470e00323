import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/**
 * Emailed codes, link tokens and action proofs (migration 007): the one module that writes
 * one_time_codes. Secrets are stored only as their keyed hashes; what a purpose means, and
 * how a secret is hashed and checked, is domain/codes.ts's.
 */

export const codeRow = z.object({
  id: z.string(),
  workspace_id: z.string(),
  user_id: z.string(),
  purpose: z.string(),
  kind: z.enum(["code", "link"]),
  secret_hash: z.instanceof(Buffer),
  attempts: z.number(),
  expires_at: z.number(),
});
export type CodeRow = z.infer<typeof codeRow>;

const columns = sql.fragment`id, workspace_id, user_id, purpose, kind, secret_hash, attempts, expires_at`;

/** Invalidates the live codes of (workspace, user, purpose), before a new one replaces them. */
export async function invalidateLiveCodes(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; purpose: string; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE one_time_codes SET invalidated_at = ${sql.timestamp(input.now)}
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId} AND purpose = ${input.purpose}
      AND consumed_at IS NULL AND invalidated_at IS NULL`);
}

/** Stores a code or link under the id its hash was made with. */
export async function insertCode(
  db: CommonQueryMethods,
  input: {
    id: string;
    workspaceId: string;
    userId: string;
    purpose: string;
    kind: "code" | "link";
    hash: Buffer;
    now: Date;
    expiresAt: Date;
  },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    INSERT INTO one_time_codes (id, workspace_id, user_id, purpose, kind, secret_hash, created_at, expires_at)
    VALUES (${input.id}, ${input.workspaceId}, ${input.userId}, ${input.purpose}, ${input.kind},
            ${sql.binary(input.hash)}, ${sql.timestamp(input.now)}, ${sql.timestamp(input.expiresAt)})`);
}

/** Stores an action proof: a link whose hash does not involve its id. */
export async function insertActionProof(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string;
    purpose: string;
    hash: Buffer;
    now: Date;
    expiresAt: Date;
  },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    INSERT INTO one_time_codes (workspace_id, user_id, purpose, kind, secret_hash, created_at, expires_at)
    VALUES (${input.workspaceId}, ${input.userId}, ${input.purpose}, 'link', ${sql.binary(input.hash)},
            ${sql.timestamp(input.now)}, ${sql.timestamp(input.expiresAt)})`);
}

/**
 * The unused, not invalidated link with this hash, of any purpose and expiry (the caller
 * checks both); with `lock`, locked for the rest of the transaction, so of two concurrent
 * uses exactly one finds it unused.
 */
export async function findUnusedLinkByHash(
  db: CommonQueryMethods,
  hash: Buffer,
  lock: boolean,
): Promise<CodeRow | null> {
  return db.maybeOne(sql.type(codeRow)`
    SELECT ${columns} FROM one_time_codes
    WHERE secret_hash = ${sql.binary(hash)} AND kind = 'link'
      AND consumed_at IS NULL AND invalidated_at IS NULL
    ${lock ? sql.fragment`FOR UPDATE` : sql.fragment``}`);
}

/** The newest unused, not invalidated code of (workspace, user, purpose), locked. */
export async function lockLatestUnusedCode(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; purpose: string },
): Promise<CodeRow | null> {
  return db.maybeOne(sql.type(codeRow)`
    SELECT ${columns} FROM one_time_codes
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId} AND purpose = ${input.purpose}
      AND kind = 'code' AND consumed_at IS NULL AND invalidated_at IS NULL
    ORDER BY created_at DESC
    LIMIT 1
    FOR UPDATE`);
}

/**
 * Spends a code or link by id alone: callers name a row they have just read and locked in
 * their tenant transaction.
 */
export async function markCodeConsumed(
  db: CommonQueryMethods,
  input: { id: string; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE one_time_codes SET consumed_at = ${sql.timestamp(input.now)} WHERE id = ${input.id}`);
}

/**
 * Counts a wrong value on a code the caller has locked; the attempt that reaches
 * `maxAttempts` also invalidates it.
 */
export async function recordWrongCode(
  db: CommonQueryMethods,
  input: { id: string; maxAttempts: number; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE one_time_codes SET attempts = attempts + 1,
      invalidated_at = CASE WHEN attempts + 1 >= ${input.maxAttempts} THEN ${sql.timestamp(input.now)} END
    WHERE id = ${input.id}`);
}

/** Deletes up to `limit` codes that expired before `before`; answers how many. */
export async function sweepExpiredCodes(
  db: CommonQueryMethods,
  input: { before: Date; limit: number },
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM one_time_codes WHERE id IN (
      SELECT id FROM one_time_codes WHERE expires_at < ${sql.timestamp(input.before)} LIMIT ${input.limit})`);
  return result.rowCount;
}
