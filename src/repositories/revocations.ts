import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

const cursorRow = z.object({ cursor: z.coerce.number().int() });

export const revocationKinds = [
  "session",
  "user",
  "membership",
  "workspace",
  "signing_key",
] as const;
export type RevocationKindName = (typeof revocationKinds)[number];

export const revocationRow = z.object({
  cursor: z.coerce.number().int(),
  kind: z.enum(revocationKinds),
  workspace_id: z.string().nullable(),
  user_id: z.string().nullable(),
  session_id: z.string().nullable(),
  kid: z.string().nullable(),
  cut_off_time: z.number(),
  expire_time: z.number(),
});
export type RevocationRow = z.infer<typeof revocationRow>;

const columns = sql.fragment`cursor, kind, workspace_id, user_id, session_id, kid, cut_off_time, expire_time`;

/** The cursor of the last committed revocation (0 when there is none). */
export async function latestRevocationCursor(db: CommonQueryMethods): Promise<number> {
  return db.oneFirst(sql.type(cursorRow)`
    SELECT coalesce(max(cursor), 0) AS cursor FROM revocations`);
}

/** Committed revocations up to `upTo` that still concern a token at `now`. */
export async function liveRevocations(
  db: CommonQueryMethods,
  input: { upTo: number; now: Date },
): Promise<readonly RevocationRow[]> {
  return db.any(sql.type(revocationRow)`
    SELECT ${columns} FROM revocations
    WHERE cursor <= ${input.upTo} AND expire_time > ${sql.timestamp(input.now)}
    ORDER BY cursor`);
}

/** Committed revocations after `cursor`, in cursor order. */
export async function revocationsAfter(
  db: CommonQueryMethods,
  input: { cursor: number; limit: number },
): Promise<readonly RevocationRow[]> {
  return db.any(sql.type(revocationRow)`
    SELECT ${columns} FROM revocations
    WHERE cursor > ${input.cursor}
    ORDER BY cursor
    LIMIT ${input.limit}`);
}

/** Removes rows that stopped mattering before `before`; answers how many. */
export async function deleteExpiredRevocations(
  db: CommonQueryMethods,
  before: Date,
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM revocations WHERE expire_time < ${sql.timestamp(before)} AND cursor IS NOT NULL`);
  return result.rowCount;
}
