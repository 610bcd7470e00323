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
    await enterTenant(tx, workspaceId);
    return fn(tx);
  });
}

/**
 * Scopes the rest of a transaction to one workspace as withTenant does from its start, for
 * a transaction that learns its workspace on the way (creating it, or finding it by slug).
 */
export async function enterTenant(
  tx: DatabaseTransactionConnection,
  workspaceId: string,
): Promise<void> {
  // Unsafe because there is no row to type: set_config answers the values just set, in two
  // columns of one name, and the statement is run for its settings alone.
  await tx.query(sql.unsafe`
    SELECT set_config('keygate.workspace_id', ${workspaceId}, true), set_config('role', ${tenantRole}, true)`);
}

/**
 * Sets the workspace id that row-level security policies read for the rest of the
 * transaction, without taking the tenant role: the transaction stays the service's.
 */
export async function setTenantWorkspace(
  tx: DatabaseTransactionConnection,
  workspaceId: string,
): Promise<void> {
  // Unsafe for the same reason as in enterTenant: the value set_config answers is not read.
  await tx.query(sql.unsafe`SELECT set_config('keygate.workspace_id', ${workspaceId}, true)`);
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
