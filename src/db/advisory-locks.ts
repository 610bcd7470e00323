import type { DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { sql } from "./sql.js";

/**
 * Transaction-scoped advisory locks, for work that instances coordinate through PostgreSQL
 * rather than through a table's rows. Each caller keeps its own key, distinct from the others
 * (the migrations' lock in migrate.ts, the signing keys' in repositories/signing-keys.ts).
 */

const lockedRow = z.object({ locked: z.boolean() });

/** Takes the lock if no other transaction holds it; answers whether it did. */
export async function tryAdvisoryXactLock(
  tx: DatabaseTransactionConnection,
  key: string,
): Promise<boolean> {
  return tx.oneFirst(sql.type(lockedRow)`
    SELECT pg_try_advisory_xact_lock(${key}::bigint) AS locked`);
}

/** Waits for the lock; it is held until the transaction ends. */
export async function advisoryXactLock(
  tx: DatabaseTransactionConnection,
  key: bigint,
): Promise<void> {
  // Unsafe because there is no row to type: pg_advisory_xact_lock answers void, and the
  // statement is run for its lock alone.
  await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(${key})`);
}
