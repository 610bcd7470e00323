import type { DatabaseTransactionConnection } from "slonik";
import { withTenant } from "../../db/with-tenant.js";
import type { AdminKeyScope } from "../../repositories/admin-key-management.js";
import type { AuthDeps } from "../deps.js";

/**
 * Runs `fn` in a transaction over one workspace's keys (as the tenant role, so row-level
 * security backs the workspace predicate) or, for null, over deployment-wide state as the
 * service role: deployment-wide keys have no workspace a tenant transaction could see.
 */
export function inKeyScope<T>(
  deps: Pick<AuthDeps, "pool">,
  workspaceId: string | null,
  fn: (tx: DatabaseTransactionConnection) => Promise<T>,
): Promise<T> {
  return workspaceId === null ? deps.pool.transaction(fn) : withTenant(deps.pool, workspaceId, fn);
}

export function keyScopeOf(workspaceId: string | null): AdminKeyScope {
  return workspaceId === null ? { deployment: true } : { workspaceId };
}
