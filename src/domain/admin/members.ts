import type { DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { withTenant } from "../../db/with-tenant.js";
import { AlreadyExistsError, FailedPreconditionError, NotFoundError } from "../../errors.js";
import {
  countOtherActiveOwners,
  deleteMembership,
  findUsersByIds,
  listMembersPage,
  lockWorkspace,
  updateMembership,
} from "../../repositories/admin-workspaces.js";
import { deleteMemberFactors } from "../../repositories/factors.js";
import {
  findMembership,
  insertMembershipIfAbsent,
  type MembershipRow,
  markClaimed,
  type Role,
} from "../../repositories/memberships.js";
import { revokeSessions } from "../../repositories/sessions.js";
import { findUserById, type UserRow } from "../../repositories/users.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import {
  actorOf,
  type Caller,
  callerWorkspace,
  requireOwnerPower,
  requirePowerOver,
  requireWorkspaceAdmin,
  requireWorkspaceRead,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { noticeFactorChange } from "../factor-notice.js";
import { accountForAddress, joining, sendInvitation } from "../invitation.js";
import { decodePageToken, pageOf, pageSize } from "../pagination.js";
import { Violations } from "../validate.js";

export type MembershipStatusValue = "active" | "disabled";

/** ALREADY_EXISTS with the field in the error's BadRequest detail. */
class MemberExistsError extends AlreadyExistsError {
  readonly violations = [{ field: "user_id", description: "is a member of the workspace already" }];
  constructor() {
    super("user_id: is a member of the workspace already", "user_id");
  }
}

const memberNotFound = () => new NotFoundError("member not found");

function validateIds(workspaceId: string, userId: string): void {
  new Violations()
    .required("workspace_id", workspaceId)
    .uuid("workspace_id", workspaceId)
    .required("user_id", userId)
    .uuid("user_id", userId)
    .throwIfAny();
}

/** Locks the workspace, so that membership changes of one workspace run one at a time. */
async function lockedWorkspace(tx: DatabaseTransactionConnection, workspaceId: string) {
  const workspace = await lockWorkspace(tx, workspaceId);
  if (!workspace) throw new NotFoundError("workspace not found");
  return workspace;
}

/** The last active owner may not stop being one (FAILED_PRECONDITION, reason LAST_OWNER). */
async function keepAnOwner(
  tx: DatabaseTransactionConnection,
  member: MembershipRow,
  what: string,
): Promise<void> {
  if (member.role !== "owner" || member.status !== "active") return;
  if ((await countOtherActiveOwners(tx, member.workspace_id, member.user_id)) === 0)
    throw new FailedPreconditionError(
      "LAST_OWNER",
      `the workspace's last active owner cannot be ${what}; make another member owner first`,
    );
}

/**
 * AddMember: workspace admin. A workspace's own callers invite (SECURITY.md 30); a deployment
 * admin adds at once (see `joining`). The answer does not tell whether the address had an
 * account: both come back as the same invitation.
 */
export async function addMember(
  deps: AdminDeps,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; userId: string; email: string; role: Role },
): Promise<MembershipRow> {
  const byEmail = input.userId === "" && input.email !== "";
  if (byEmail) {
    new Violations()
      .required("workspace_id", input.workspaceId)
      .uuid("workspace_id", input.workspaceId)
      .email("email", input.email)
      .throwIfAny();
  } else {
    validateIds(input.workspaceId, input.userId);
  }
  requireWorkspaceAdmin(caller, input.workspaceId);
  if (input.role === "owner") requireOwnerPower(caller);
  const { workspaceId, role } = input;
  const byDeployment = callerWorkspace(caller) === null;
  const result = await withTenant(deps.pool, workspaceId, async (tx) => {
    const workspace = await lockedWorkspace(tx, workspaceId);
    let account: { user: UserRow; created: boolean };
    if (byEmail) {
      account = await accountForAddress(tx, input.email);
    } else {
      const user = await findUserById(tx, input.userId);
      if (!user) throw new NotFoundError("user not found");
      account = { user, created: false };
    }
    const userId = account.user.id;
    const how = joining({ ...account, byDeployment });
    const inserted = await insertMembershipIfAbsent(tx, {
      workspaceId,
      userId,
      role,
      invited: how.invited,
    });
    if (!inserted) throw new MemberExistsError();
    let row = inserted;
    if (how.claimed) {
      await markClaimed(tx, { workspaceId, userId, now: deps.clock.now() });
      row = (await findMembership(tx, workspaceId, userId)) ?? inserted;
    }
    if (how.mailed) await sendInvitation(tx, deps, { workspace, user: account.user });
    await audit(tx, deps, meta, {
      type: how.mailed ? "member_invited" : "member_added",
      workspaceId,
      userId,
      actor: actorOf(caller),
      outcome: "success",
      details: { role },
    });
    return { row, mailed: how.mailed, user: account.user };
  });
  if (result.mailed) deps.mail.wake();
  return result.row;
}

/**
 * UpdateMember: workspace admin; changes the role and/or status (null: unchanged). Disabling
 * ends the member's sessions in the workspace at once.
 */
export async function updateMember(
  deps: AdminDeps,
  meta: RequestMeta,
  caller: Caller,
  input: {
    workspaceId: string;
    userId: string;
    role: Role | null;
    status: MembershipStatusValue | null;
  },
): Promise<MembershipRow> {
  validateIds(input.workspaceId, input.userId);
  requireWorkspaceAdmin(caller, input.workspaceId);
  if (input.role === "owner") requireOwnerPower(caller);
  const { workspaceId, userId } = input;
  const updated = await withTenant(deps.pool, workspaceId, async (tx) => {
    await lockedWorkspace(tx, workspaceId);
    const member = await findMembership(tx, workspaceId, userId);
    if (!member) throw memberNotFound();
    requirePowerOver(caller, member.role);
    if (member.status === "invited" && input.status !== null)
      new Violations()
        .add("status", "is the invitation's until the invited account accepts it")
        .throwIfAny();
    if (input.role === null && input.status === null) return member;
    const demoted = input.role !== null && input.role !== "owner";
    if (demoted) await keepAnOwner(tx, member, "demoted");
    if (input.status === "disabled") await keepAnOwner(tx, member, "disabled");
    // Tokens carry the role: a new role, or a disabled membership, ends the old tokens.
    const changed =
      (input.role !== null && input.role !== member.role) ||
      (input.status === "disabled" && member.status !== "disabled");
    const row = await updateMembership(tx, {
      workspaceId,
      userId,
      role: input.role,
      status: input.status,
      tokensValidAfter: changed ? deps.clock.now() : null,
    });
    if (!row) throw memberNotFound();
    const ended =
      input.status === "disabled"
        ? await revokeSessions(tx, {
            workspaceId,
            userId,
            reason: "membership_disabled",
            now: deps.clock.now(),
          })
        : [];
    await audit(tx, deps, meta, {
      type: "member_updated",
      workspaceId,
      userId,
      actor: actorOf(caller),
      outcome: "success",
      details: {
        role: row.role,
        status: row.status,
        previous_role: member.role,
        previous_status: member.status,
        sessions_ended: ended.length,
      },
    });
    return row;
  });
  await deps.revocations.changed();
  return updated;
}

/** RemoveMember: workspace admin; removes the membership and ends its sessions. */
export async function removeMember(
  deps: AdminDeps,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; userId: string },
): Promise<void> {
  validateIds(input.workspaceId, input.userId);
  requireWorkspaceAdmin(caller, input.workspaceId);
  const { workspaceId, userId } = input;
  await withTenant(deps.pool, workspaceId, async (tx) => {
    await lockedWorkspace(tx, workspaceId);
    const member = await findMembership(tx, workspaceId, userId);
    if (!member) throw memberNotFound();
    requirePowerOver(caller, member.role);
    await keepAnOwner(tx, member, "removed");
    if (!(await deleteMembership(tx, workspaceId, userId))) throw memberNotFound();
    const ended = await revokeSessions(tx, {
      workspaceId,
      userId,
      reason: "membership_removed",
      now: deps.clock.now(),
    });
    await audit(tx, deps, meta, {
      type: "member_removed",
      workspaceId,
      userId,
      actor: actorOf(caller),
      outcome: "success",
      details: { role: member.role, sessions_ended: ended.length },
    });
  });
  await deps.revocations.changed();
}

/**
 * ResetMemberFactors: a member who lost their factors gets none in this workspace (those of
 * their other workspaces are untouched), loses their sessions here, and is mailed. Owners'
 * factors are reset by owners only, as their other protected facts are.
 */
export async function resetMemberFactors(
  deps: AdminDeps,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; userId: string },
): Promise<{ passkeys: number; totp: number; recoveryCodes: number }> {
  validateIds(input.workspaceId, input.userId);
  requireWorkspaceAdmin(caller, input.workspaceId);
  const { workspaceId, userId } = input;
  const removed = await withTenant(deps.pool, workspaceId, async (tx) => {
    const workspace = await lockedWorkspace(tx, workspaceId);
    const member = await findMembership(tx, workspaceId, userId);
    const user = member && (await findUserById(tx, userId));
    if (!member || member.status === "invited" || !user) throw memberNotFound();
    requirePowerOver(caller, member.role);
    const removed = await deleteMemberFactors(tx, workspaceId, userId);
    const ended = await revokeSessions(tx, {
      workspaceId,
      userId,
      reason: "factors_reset",
      now: deps.clock.now(),
    });
    await noticeFactorChange(tx, deps, meta, {
      workspace,
      user,
      change: "factors_reset",
      actor: actorOf(caller),
      details: {
        passkeys: removed.passkeys,
        totp: removed.totp,
        recovery_codes: removed.recoveryCodes,
        sessions_ended: ended.length,
      },
    });
    return removed;
  });
  deps.mail.wake();
  await deps.revocations.changed();
  return removed;
}

const membersCursor = z.object({ u: z.uuid() });

/** ListMembers: workspace read; members with their users, in user id order. */
export async function listMembers(
  deps: AdminDeps,
  caller: Caller,
  input: { workspaceId: string; pageSize: number; pageToken: string },
): Promise<{
  members: readonly (MembershipRow & { user: UserRow | undefined })[];
  nextPageToken: string;
}> {
  new Violations()
    .required("workspace_id", input.workspaceId)
    .uuid("workspace_id", input.workspaceId)
    .throwIfAny();
  requireWorkspaceRead(caller, input.workspaceId);
  const limit = pageSize(input.pageSize);
  const cursor = decodePageToken(input.pageToken, "members", membersCursor);
  const { workspaceId } = input;
  const { rows, users } = await withTenant(deps.pool, workspaceId, async (tx) => {
    if (!(await findWorkspaceById(tx, workspaceId))) throw new NotFoundError("workspace not found");
    const rows = await listMembersPage(tx, {
      workspaceId,
      afterUserId: cursor?.u ?? null,
      limit: limit + 1,
    });
    const users = await findUsersByIds(
      tx,
      rows.map((r) => r.user_id),
    );
    return { rows, users };
  });
  const byId = new Map(users.map((u) => [u.id, u]));
  const { page, nextPageToken } = pageOf(rows, limit, "members", (last) => ({ u: last.user_id }));
  return { members: page.map((m) => ({ ...m, user: byId.get(m.user_id) })), nextPageToken };
}
