import type { DatabasePool, DatabaseTransactionConnection } from "slonik";
import { sql } from "./sql.js";

/** The role tenant-scoped transactions run as (migration 011): row-level security applies. */
export const tenantRole = "keygate_tenant";

/**
 * Runs `fn` in a transaction scoped to one workspace: as the keygate_tenant role, with the
 * workspace id in the transaction-local setting that row-level security policies read. Every
 * repository call inside still filters by workspace explicitly; the policies are the second
 * wall (SECURITY.md 20).
 */
export function withTenant<T>(
  pool: DatabasePool,
  workspaceId: string,
  fn: (tx: DatabaseTransactionConnection) => Promise<T>,
): Promise<T> {
  return pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`
      SELECT set_config('keygate.workspace_id', ${workspaceId}, true), set_config('role', ${tenantRole}, true)`);
    return fn(tx);
  });
}

/**
 * Inside a tenant transaction, runs one deliberate cross-tenant step (such as ending a user's
 * sessions in every workspace after a password change) as the service role, then returns to
 * the tenant role.
 */
export async function asService<T>(
  tx: DatabaseTransactionConnection,
  fn: () => Promise<T>,
): Promise<T> {
  await tx.query(sql.unsafe`RESET ROLE`);
  try {
    return await fn();
  } finally {
    await tx.query(sql.unsafe`SELECT set_config('role', ${tenantRole}, true)`);
  }
}
