import type { DatabaseTransactionConnection } from "slonik";
import { withTenant } from "../../db/with-tenant.js";
import { NotFoundError } from "../../errors.js";
import {
  type AdminUserRow,
  findAdminUser,
  lockUser,
  memberRoleIn,
} from "../../repositories/admin-users.js";
import type { Role } from "../../repositories/memberships.js";
import {
  type Caller,
  callerWorkspace,
  requireDeploymentAdmin,
  requireWorkspaceAdmin,
} from "../admin-auth.js";
import type { AdminDeps } from "../deps.js";
import { Violations } from "../validate.js";

/**
 * Which users an AdminService caller reaches, and where its transactions run: the rules the
 * user RPCs (users.ts, users-access.ts) share.
 */

export const notFound = () => new NotFoundError("user not found");

/**
 * Runs `fn` deployment-wide for deployment keys, or in the caller's workspace (row-level
 * security on) for workspace-scoped callers.
 */
export function inCallerScope<T>(
  deps: AdminDeps,
  workspaceId: string | null,
  fn: (tx: DatabaseTransactionConnection) => Promise<T>,
): Promise<T> {
  return workspaceId === null ? deps.pool.transaction(fn) : withTenant(deps.pool, workspaceId, fn);
}

/**
 * The user as the caller may see it: any user for deployment-wide callers, or, with `view` a
 * workspace, a member of it (active or disabled; an invitation is not yet a member), with that
 * workspace's metadata. Anyone else is NOT_FOUND. Optionally locks the row first.
 */
export async function visibleUser(
  tx: DatabaseTransactionConnection,
  view: string | null,
  userId: string,
  lock = false,
): Promise<{ user: AdminUserRow; role: Role | null }> {
  if (lock && !(await lockUser(tx, userId))) throw notFound();
  const role = view === null ? null : await memberRoleIn(tx, view, userId);
  if (view !== null && role === null) throw notFound();
  const user = await findAdminUser(tx, userId, view);
  if (!user) throw notFound();
  return { user, role };
}

export function validUserId(userId: string): void {
  new Violations().required("user_id", userId, 36).uuid("user_id", userId).throwIfAny();
}

/**
 * The workspace whose view a call reads or writes: the one it names, else the caller's own;
 * null for a deployment-wide caller naming none (the account itself).
 */
export function viewOf(caller: Caller, workspaceId: string): string | null {
  return workspaceId !== "" ? workspaceId : callerWorkspace(caller);
}

/** Workspace admin of the view's workspace, or deployment admin for the account itself. */
export function requireAdminOf(caller: Caller, view: string | null): void {
  if (view === null) requireDeploymentAdmin(caller);
  else requireWorkspaceAdmin(caller, view);
}
