import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/** Rate-limit windows (migrations 012 and 024): the one module that writes rate_limits. */

const hitRow = z.object({ allowed: z.boolean(), retry_after_ms: z.number() });

/**
 * Counts one hit on each key, all or nothing (keygate_rate_limit_hits). The caller gives the
 * keys in one fixed order, so that concurrent calls lock their rows alike.
 */
export async function countRateLimitHits(
  db: CommonQueryMethods,
  input: {
    counts: readonly { key: string; limit: number; windowSeconds: number }[];
    now: Date;
  },
): Promise<{ allowed: boolean; retry_after_ms: number }> {
  const keys = sql.array(
    input.counts.map((c) => c.key),
    "text",
  );
  const limits = sql.array(
    input.counts.map((c) => c.limit),
    "int4",
  );
  const windows = sql.array(
    input.counts.map((c) => c.windowSeconds),
    "int4",
  );
  return db.one(sql.type(hitRow)`
    SELECT allowed, retry_after_ms::float8 AS retry_after_ms
    FROM keygate_rate_limit_hits(${keys}, ${limits}, ${windows}, ${sql.timestamp(input.now)})`);
}

/** Deletes up to 5,000 windows that have passed; answers how many. */
export async function sweepRateLimitWindows(db: CommonQueryMethods, now: Date): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM rate_limits WHERE key IN (
      SELECT key FROM rate_limits WHERE expires_at < ${sql.timestamp(now)} LIMIT 5000)`);
  return result.rowCount;
}
