import type { DatabasePool, DatabaseTransactionConnection } from "slonik";
import { sql } from "./sql.js";

/**
 * Runs `fn` in a transaction scoped to one workspace: the workspace id is set with SET LOCAL
 * semantics (set_config(..., true)) for row-level security policies to read, and every
 * repository call inside still filters by it explicitly.
 */
export function withTenant<T>(
  pool: DatabasePool,
  workspaceId: string,
  fn: (tx: DatabaseTransactionConnection) => Promise<T>,
): Promise<T> {
  return pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT set_config('keygate.workspace_id', ${workspaceId}, true)`);
    return fn(tx);
  });
}
