import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";

const stepRow = z.object({ step: z.coerce.number() });
const userIdRow = z.object({ user_id: z.string() });

/** A membership's authenticator app (migration 023); the secret stays sealed here. */
export const totpFactorRow = z.object({
  workspace_id: z.string(),
  user_id: z.string(),
  secret_sealed: z.instanceof(Buffer),
  created_at: z.number(),
  confirmed_at: z.number().nullable(),
  enrollment_expires_at: z.number().nullable(),
  // bigint in the database; steps of 30 s fit a double for millions of years.
  last_used_step: z.coerce.number().nullable(),
});
export type TotpFactorRow = z.infer<typeof totpFactorRow>;

const columns = sql.fragment`workspace_id, user_id, secret_sealed, created_at, confirmed_at,
  enrollment_expires_at, last_used_step`;

export async function findTotpFactor(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<TotpFactorRow | null> {
  return db.maybeOne(sql.type(totpFactorRow)`
    SELECT ${columns} FROM totp_factors WHERE workspace_id = ${workspaceId} AND user_id = ${userId}`);
}

/**
 * Starts (or restarts) an enrollment: a new sealed secret replaces an unconfirmed one. Null
 * when the member already has a confirmed app, which is never replaced this way (also when a
 * confirmation commits concurrently).
 */
export async function upsertTotpEnrollment(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string;
    secretSealed: Buffer;
    now: Date;
    expiresAt: Date;
  },
): Promise<TotpFactorRow | null> {
  return db.maybeOne(sql.type(totpFactorRow)`
    INSERT INTO totp_factors (workspace_id, user_id, secret_sealed, created_at, enrollment_expires_at)
    VALUES (${input.workspaceId}, ${input.userId}, ${sql.binary(input.secretSealed)},
            ${sql.timestamp(input.now)}, ${sql.timestamp(input.expiresAt)})
    ON CONFLICT (workspace_id, user_id) DO UPDATE
      SET secret_sealed = EXCLUDED.secret_sealed, created_at = EXCLUDED.created_at,
          enrollment_expires_at = EXCLUDED.enrollment_expires_at, last_used_step = NULL
      WHERE totp_factors.confirmed_at IS NULL
    RETURNING ${columns}`);
}

/**
 * Confirms a live enrollment with the code of time step `step`, which becomes the last used
 * one. Null when there is no live enrollment (expired, confirmed meanwhile).
 */
export async function confirmTotpEnrollment(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; step: number; now: Date },
): Promise<TotpFactorRow | null> {
  return db.maybeOne(sql.type(totpFactorRow)`
    UPDATE totp_factors
    SET confirmed_at = ${sql.timestamp(input.now)}, enrollment_expires_at = NULL,
        last_used_step = ${input.step}
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}
      AND confirmed_at IS NULL AND enrollment_expires_at > ${sql.timestamp(input.now)}
    RETURNING ${columns}`);
}

/**
 * Spends time step `step` of a confirmed app: only when it is later than the last step used,
 * atomically, so that a code (or an earlier one) works once, and of concurrent uses of one
 * code exactly one gets the row back.
 */
export async function useTotpStep(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; step: number },
): Promise<boolean> {
  const row = await db.maybeOne(sql.type(stepRow)`
    UPDATE totp_factors SET last_used_step = ${input.step}
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}
      AND confirmed_at IS NOT NULL
      AND (last_used_step IS NULL OR last_used_step < ${input.step})
    RETURNING last_used_step AS step`);
  return row !== null;
}

/** Removes a confirmed app; false when there is none. */
export async function deleteConfirmedTotpFactor(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<boolean> {
  const row = await db.maybeOne(sql.type(userIdRow)`
    DELETE FROM totp_factors
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId} AND confirmed_at IS NOT NULL
    RETURNING user_id`);
  return row !== null;
}
