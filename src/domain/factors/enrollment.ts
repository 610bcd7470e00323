import type { WorkspaceSettings } from "../../config.js";
import { NotFoundError, UnauthenticatedError } from "../../errors.js";
import { findMembership, type Role } from "../../repositories/memberships.js";
import type { PendingLoginRow } from "../../repositories/pending-logins.js";
import { findUserById, type UserRow } from "../../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../../repositories/workspaces.js";
import type { AuthDeps, Principal } from "../deps.js";
import { livePendingLogin } from "../second-step.js";
import { effectiveSettings } from "../settings.js";

/** Who enrolls: the signed-in member, or the member of an enrollment pending login. */
export interface EnrollmentCaller {
  readonly workspace: WorkspaceRow;
  readonly user: UserRow;
  readonly role: Role;
  readonly settings: WorkspaceSettings;
  readonly pending: PendingLoginRow | null;
  readonly principal: Principal | null;
}

/**
 * The member a factor enrollment is for (EnrollTotp, ConfirmTotp, and any other factor's
 * enrollment): the pending login's when one is named (it must wait for a first factor),
 * else the signed-in caller's; the membership must be active and factors on.
 */
export async function enrollmentCaller(
  deps: AuthDeps,
  principal: Principal | undefined,
  pendingLoginId: string,
): Promise<EnrollmentCaller> {
  let pending: PendingLoginRow | null = null;
  let member: { workspaceId: string; userId: string };
  if (pendingLoginId !== "") {
    pending = await livePendingLogin(deps, pendingLoginId);
    if (pending.step !== "enroll") throw new NotFoundError("pending login not found or expired");
    member = { workspaceId: pending.workspace_id, userId: pending.user_id };
  } else if (principal) {
    member = principal;
  } else {
    throw new UnauthenticatedError(
      "UNAUTHENTICATED",
      "send `authorization: Bearer <access token>` or the pending login's id",
    );
  }
  const workspace = await findWorkspaceById(deps.pool, member.workspaceId);
  const user = await findUserById(deps.pool, member.userId);
  const membership = await findMembership(deps.pool, member.workspaceId, member.userId);
  if (!workspace || !user || user.blocked || membership?.status !== "active") {
    if (pending) throw new NotFoundError("pending login not found or expired");
    throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended");
  }
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (settings.mfa === "off") {
    throw new NotFoundError("factors are off in this workspace", "FLOW_DISABLED");
  }
  return {
    workspace,
    user,
    role: membership.role,
    settings,
    pending,
    principal: pending ? null : (principal ?? null),
  };
}
