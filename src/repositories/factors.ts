import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";

const summaryRow = z.object({ totp: z.boolean(), passkeys: z.number(), recovery: z.number() });
const deletedRow = z.object({ passkeys: z.number(), totp: z.number(), recovery: z.number() });

/** Which factors a membership has set up (confirmed ones only). */
export interface FactorSummary {
  readonly totp: boolean;
  readonly passkeys: number;
  readonly recoveryCodesLeft: number;
}

export async function factorSummary(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<FactorSummary> {
  const row = await db.one(sql.type(summaryRow)`
    SELECT
      EXISTS (SELECT 1 FROM totp_factors
              WHERE workspace_id = ${workspaceId} AND user_id = ${userId} AND confirmed_at IS NOT NULL) AS totp,
      (SELECT count(*)::int FROM passkeys
       WHERE workspace_id = ${workspaceId} AND user_id = ${userId}) AS passkeys,
      (SELECT count(*)::int FROM recovery_codes
       WHERE workspace_id = ${workspaceId} AND user_id = ${userId} AND used_at IS NULL) AS recovery`);
  return { totp: row.totp, passkeys: row.passkeys, recoveryCodesLeft: row.recovery };
}

/** Removes every factor of a membership; answers how many of each went. */
export async function deleteMemberFactors(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<{ passkeys: number; totp: number; recoveryCodes: number }> {
  const row = await db.one(sql.type(deletedRow)`
    WITH p AS (DELETE FROM passkeys WHERE workspace_id = ${workspaceId} AND user_id = ${userId} RETURNING 1),
         t AS (DELETE FROM totp_factors WHERE workspace_id = ${workspaceId} AND user_id = ${userId}
               RETURNING confirmed_at),
         r AS (DELETE FROM recovery_codes WHERE workspace_id = ${workspaceId} AND user_id = ${userId}
               RETURNING used_at)
    SELECT (SELECT count(*)::int FROM p) AS passkeys,
           (SELECT count(*)::int FROM t WHERE confirmed_at IS NOT NULL) AS totp,
           (SELECT count(*)::int FROM r WHERE used_at IS NULL) AS recovery`);
  return { passkeys: row.passkeys, totp: row.totp, recoveryCodes: row.recovery };
}
