import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/** What finishes a pending login: the emailed code, a membership factor, or a first factor. */
export type PendingStep = "email" | "factor" | "enroll";

export const pendingLoginRow = z.object({
  id: z.string(),
  workspace_id: z.string(),
  user_id: z.string(),
  expires_at: z.number(),
  completed_at: z.number().nullable(),
  amr: z.array(z.string()),
  step: z.enum(["email", "factor", "enroll"]),
});
export type PendingLoginRow = z.infer<typeof pendingLoginRow>;

const columns = sql.fragment`id, workspace_id, user_id, expires_at, completed_at, amr, step`;

export async function insertPendingLogin(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string;
    ipAddress: string | null;
    now: Date;
    expiresAt: Date;
    amr: readonly string[];
    step: PendingStep;
  },
): Promise<PendingLoginRow> {
  return db.one(sql.type(pendingLoginRow)`
    INSERT INTO pending_logins (workspace_id, user_id, ip_address, created_at, expires_at, amr, step)
    VALUES (${input.workspaceId}, ${input.userId}, ${input.ipAddress}, ${sql.timestamp(input.now)},
            ${sql.timestamp(input.expiresAt)}, ${sql.array([...input.amr], "text")}, ${input.step})
    RETURNING ${columns}`);
}

/** By id, across workspaces: the id is the public caller's only handle on it. */
export async function findPendingLogin(
  db: CommonQueryMethods,
  id: string,
): Promise<PendingLoginRow | null> {
  return db.maybeOne(
    sql.type(pendingLoginRow)`SELECT ${columns} FROM pending_logins WHERE id = ${id}`,
  );
}

/**
 * Marks a live pending login of the given step completed, once: of concurrent completions
 * exactly one gets the row back.
 */
export async function completePendingLogin(
  db: CommonQueryMethods,
  input: { workspaceId: string; id: string; step: PendingStep; now: Date },
): Promise<PendingLoginRow | null> {
  return db.maybeOne(sql.type(pendingLoginRow)`
    UPDATE pending_logins SET completed_at = ${sql.timestamp(input.now)}
    WHERE workspace_id = ${input.workspaceId} AND id = ${input.id} AND step = ${input.step}
      AND completed_at IS NULL AND expires_at > ${sql.timestamp(input.now)}
    RETURNING ${columns}`);
}

/**
 * A data-modifying CTE that ends the user's unfinished pending logins (in one workspace, or
 * in all), for the statements that end their sessions: whatever ends a user's sessions also
 * ends the logins still waiting for a second step, which the old password began.
 */
export function endPendingLoginsWith(input: {
  userId: string;
  workspaceId: string | null;
  now: Date;
}) {
  return sql.fragment`ended_pending_logins AS (
    UPDATE pending_logins SET expires_at = ${sql.timestamp(input.now)}
    WHERE user_id = ${input.userId} AND completed_at IS NULL
      AND expires_at > ${sql.timestamp(input.now)}
      AND (${input.workspaceId}::uuid IS NULL OR workspace_id = ${input.workspaceId}::uuid))`;
}

/** Deletes up to `limit` pending logins that expired before `before`; answers how many. */
export async function sweepExpiredPendingLogins(
  db: CommonQueryMethods,
  input: { before: Date; limit: number },
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM pending_logins WHERE id IN (
      SELECT id FROM pending_logins WHERE expires_at < ${sql.timestamp(input.before)} LIMIT ${input.limit})`);
  return result.rowCount;
}
