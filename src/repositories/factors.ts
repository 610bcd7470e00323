import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";

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
  const row = await db.one(sql.type(
    z.object({ totp: z.boolean(), passkeys: z.number(), recovery: z.number() }),
  )`
    SELECT
      EXISTS (SELECT 1 FROM totp_factors
              WHERE workspace_id = ${workspaceId} AND user_id = ${userId} AND confirmed_at IS NOT NULL) AS totp,
      (SELECT count(*)::int FROM passkeys
       WHERE workspace_id = ${workspaceId} AND user_id = ${userId}) AS passkeys,
      (SELECT count(*)::int FROM recovery_codes
       WHERE workspace_id = ${workspaceId} AND user_id = ${userId} AND used_at IS NULL) AS recovery`);
  return { totp: row.totp, passkeys: row.passkeys, recoveryCodesLeft: row.recovery };
}
