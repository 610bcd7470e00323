import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/**
 * Logout tokens owed to clients (migration 025's trigger writes them). Read and written as
 * the service role: the sender works for every workspace, one claimed row at a time.
 */

const owedLogoutRow = z.object({
  id: z.string(),
  workspace_id: z.string(),
  client_id: z.string(),
  session_id: z.string(),
  user_id: z.string(),
  attempts: z.number(),
  backchannel_logout_uri: z.string().nullable(),
});
export type OwedLogoutRow = z.infer<typeof owedLogoutRow>;

/**
 * Claims up to `limit` due logouts for `leaseMs`, at most `perClient` of any one client and
 * none of the clients in `busy` (those this instance is still sending to): a client that
 * answers slowly holds up only its own logouts. Another instance sees a claimed row again only
 * if this one neither delivers nor reschedules it by then; SKIP LOCKED keeps instances apart.
 */
export async function claimDueLogouts(
  db: CommonQueryMethods,
  input: { now: Date; leaseMs: number; limit: number; perClient: number; busy: readonly string[] },
): Promise<readonly OwedLogoutRow[]> {
  const now = sql.timestamp(input.now);
  const leaseUntil = sql.timestamp(new Date(input.now.getTime() + input.leaseMs));
  return db.any(sql.type(owedLogoutRow)`
    UPDATE oauth_logouts l SET attempts = l.attempts + 1, next_attempt_at = ${leaseUntil}
    FROM oauth_clients c
    WHERE l.id IN (
        SELECT id FROM (
          SELECT id, row_number() OVER (PARTITION BY workspace_id, client_id ORDER BY next_attempt_at) AS n
          FROM oauth_logouts
          WHERE delivered_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= ${now}
            AND NOT (workspace_id::text || '/' || client_id = ANY(${sql.array([...input.busy], "text")}))
        ) due
        WHERE n <= ${input.perClient}
        LIMIT ${input.limit})
      AND c.workspace_id = l.workspace_id AND c.client_id = l.client_id
      AND l.delivered_at IS NULL AND l.abandoned_at IS NULL AND l.next_attempt_at <= ${now}
    RETURNING l.id, l.workspace_id, l.client_id, l.session_id, l.user_id, l.attempts,
              c.backchannel_logout_uri`);
}

export async function markLogoutDelivered(
  db: CommonQueryMethods,
  input: { id: string; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE oauth_logouts SET delivered_at = ${sql.timestamp(input.now)}, last_error = NULL
    WHERE id = ${input.id}`);
}

/** A failed attempt: tried again at `retryAt`, or given up on when that is null. */
export async function markLogoutFailed(
  db: CommonQueryMethods,
  input: { id: string; now: Date; retryAt: Date | null; error: string },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE oauth_logouts
    SET last_error = ${input.error.slice(0, 500)},
        next_attempt_at = ${input.retryAt === null ? sql.timestamp(input.now) : sql.timestamp(input.retryAt)},
        abandoned_at = ${input.retryAt === null ? sql.timestamp(input.now) : null}
    WHERE id = ${input.id}`);
}

/** Deletes up to `limit` rows delivered or given up before `before` (the sweep). */
export async function sweepFinishedLogouts(
  db: CommonQueryMethods,
  input: { before: Date; limit: number },
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM oauth_logouts WHERE id IN (
      SELECT id FROM oauth_logouts WHERE coalesce(delivered_at, abandoned_at) < ${sql.timestamp(input.before)} LIMIT ${input.limit})`);
  return result.rowCount;
}
