import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/**
 * Failed logins per subject (migrations 012 and 016): an address, or a workspace and an
 * address. The one module that writes login_failures.
 */

const attemptRow = z.object({ allowed: z.boolean(), retry_after_ms: z.number() });

/** Reserves one attempt as a failure (keygate_login_attempt); refused while locked. */
export async function reserveLoginAttempt(
  db: CommonQueryMethods,
  input: {
    subject: string;
    threshold: number;
    baseSeconds: number;
    maxSeconds: number;
    now: Date;
  },
): Promise<{ allowed: boolean; retry_after_ms: number }> {
  return db.one(sql.type(attemptRow)`
    SELECT allowed, retry_after_ms::float8 AS retry_after_ms
    FROM keygate_login_attempt(${input.subject}, ${input.threshold}, ${input.baseSeconds},
                               ${input.maxSeconds}, ${sql.timestamp(input.now)})`);
}

/** Forgets the failed-login count and lockout of a subject. */
export async function clearLoginFailures(db: CommonQueryMethods, subject: string): Promise<void> {
  await db.query(sql.type(voidRow)`DELETE FROM login_failures WHERE email_normalized = ${subject}`);
}

/** Deletes rows that lock nothing any more and were last touched a day ago; answers how many. */
export async function sweepLoginFailures(db: CommonQueryMethods, now: Date): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM login_failures
    WHERE (locked_until IS NULL OR locked_until < ${sql.timestamp(now)})
      AND updated_at < ${sql.timestamp(now)}::timestamptz - interval '1 day'`);
  return result.rowCount;
}
