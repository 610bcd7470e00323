import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

const idRow = z.object({ id: z.string() });

/**
 * Replaces a membership's recovery codes (their keyed hashes) with a new set: the previous
 * set, used codes included, is gone when the caller's transaction commits.
 */
export async function replaceRecoveryCodes(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; hashes: readonly Buffer[]; now: Date },
): Promise<void> {
  await deleteRecoveryCodes(db, input.workspaceId, input.userId);
  if (input.hashes.length === 0) return;
  const rows = input.hashes.map(
    (h) =>
      sql.fragment`(${input.workspaceId}, ${input.userId}, ${sql.binary(h)}, ${sql.timestamp(input.now)})`,
  );
  await db.query(sql.type(voidRow)`
    INSERT INTO recovery_codes (workspace_id, user_id, code_hash, created_at)
    VALUES ${sql.join(rows, sql.fragment`, `)}`);
}

export async function deleteRecoveryCodes(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<void> {
  await db.query(sql.type(voidRow)`
    DELETE FROM recovery_codes WHERE workspace_id = ${workspaceId} AND user_id = ${userId}`);
}

/**
 * Spends the unused code with this hash, once: of concurrent uses exactly one gets true (the
 * row lock makes the others re-check `used_at` and find it set).
 */
export async function useRecoveryCode(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; hash: Buffer; now: Date },
): Promise<boolean> {
  const row = await db.maybeOne(sql.type(idRow)`
    UPDATE recovery_codes SET used_at = ${sql.timestamp(input.now)}
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}
      AND code_hash = ${sql.binary(input.hash)} AND used_at IS NULL
    RETURNING id`);
  return row !== null;
}
