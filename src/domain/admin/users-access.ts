import { FailedPreconditionError } from "../../errors.js";
import {
  type AdminUserRow,
  eraseUser,
  findAdminUser,
  lockUser,
  setUserBlocked,
  workspacesWhereLastOwner,
} from "../../repositories/admin-users.js";
import { clearLoginFailures } from "../../repositories/login-failures.js";
import { revokeSessions } from "../../repositories/sessions.js";
import { consumeActionProof } from "../action-proofs.js";
import {
  actorOf,
  type Caller,
  callerWorkspace,
  requireDeploymentAdmin,
  requirePowerOver,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { Violations } from "../validate.js";
import {
  inCallerScope,
  notFound,
  requireAdminOf,
  validUserId,
  visibleUser,
} from "./users-scope.js";

/**
 * AdminService's RPCs that end a user's access: blocking (and lifting it), ending their
 * sessions, erasing the account. Who may see whom is as in users.ts (users-scope.ts).
 */

const maxBlockReasonLength = 1000;

/**
 * Blocks a user everywhere (SECURITY.md 11): every session ends in the same transaction, so
 * refresh fails at once; access tokens already fail at once because authentication checks
 * the user's blocked flag, and login answers like a wrong password.
 */
export async function blockUser(
  deps: AdminDeps,
  caller: Caller,
  meta: RequestMeta,
  input: { userId: string; reason: string },
): Promise<AdminUserRow> {
  requireDeploymentAdmin(caller);
  const v = new Violations().required("user_id", input.userId, 36).uuid("user_id", input.userId);
  if (input.reason.length > maxBlockReasonLength)
    v.add("reason", `is longer than ${maxBlockReasonLength} characters`);
  v.throwIfAny();
  const blocked = await deps.pool.transaction(async (tx) => {
    if (!(await lockUser(tx, input.userId))) throw notFound();
    const now = deps.clock.now();
    await setUserBlocked(tx, { userId: input.userId, blocked: true, now });
    const revoked = (
      await revokeSessions(tx, {
        userId: input.userId,
        workspaceId: null,
        reason: "user_blocked",
        now,
      })
    ).length;
    await audit(tx, deps, meta, {
      type: "user_blocked",
      workspaceId: null,
      userId: input.userId,
      actor: actorOf(caller),
      outcome: "success",
      details: { reason: input.reason, sessions_revoked: revoked },
    });
    return (await findAdminUser(tx, input.userId)) as AdminUserRow;
  });
  await deps.revocations.changed();
  return blocked;
}

/**
 * Lifts a block. It also clears the failed-login count and temporary lockout of the user's
 * address: unblocking is how an admin ends a lockout early.
 */
export async function unblockUser(
  deps: AdminDeps,
  caller: Caller,
  meta: RequestMeta,
  userId: string,
): Promise<AdminUserRow> {
  requireDeploymentAdmin(caller);
  validUserId(userId);
  return deps.pool.transaction(async (tx) => {
    if (!(await lockUser(tx, userId))) throw notFound();
    const before = (await findAdminUser(tx, userId)) as AdminUserRow;
    await setUserBlocked(tx, { userId, blocked: false, now: deps.clock.now() });
    await clearLoginFailures(tx, before.email_normalized);
    await audit(tx, deps, meta, {
      type: "user_unblocked",
      workspaceId: null,
      userId,
      actor: actorOf(caller),
      outcome: "success",
      details: {
        was_blocked: before.blocked,
        lockout_cleared: before.locked_until !== null || before.failed_login_count > 0,
      },
    });
    return (await findAdminUser(tx, userId)) as AdminUserRow;
  });
}

/**
 * Ends the user's sessions in one workspace (workspace admin of it) or in every workspace
 * (deployment admin). Answers how many were live.
 */
export async function revokeUserSessions(
  deps: AdminDeps,
  caller: Caller,
  meta: RequestMeta,
  input: { userId: string; workspaceId: string },
): Promise<number> {
  const scope = input.workspaceId === "" ? null : input.workspaceId;
  requireAdminOf(caller, scope);
  new Violations()
    .required("user_id", input.userId, 36)
    .uuid("user_id", input.userId)
    .uuid("workspace_id", input.workspaceId)
    .throwIfAny();
  // A deployment-wide caller may name any user; a workspace's own callers only its members.
  const visibleIn = callerWorkspace(caller) === null ? null : scope;
  const revoked = await inCallerScope(deps, scope, async (tx) => {
    const { role } = await visibleUser(tx, visibleIn, input.userId);
    requirePowerOver(caller, role);
    const revoked = (
      await revokeSessions(tx, {
        userId: input.userId,
        workspaceId: scope,
        reason: "admin_revoked",
        now: deps.clock.now(),
      })
    ).length;
    await audit(tx, deps, meta, {
      type: "user_sessions_revoked",
      workspaceId: scope,
      userId: input.userId,
      actor: actorOf(caller),
      outcome: "success",
      details: { sessions_revoked: revoked },
    });
    return revoked;
  });
  await deps.revocations.changed();
  return revoked;
}

/**
 * Erases a user (deployment admin, or the user themself with an action proof from
 * OtpService). Refused while they are the last active owner of a workspace that has other
 * members: that workspace would be left without anyone able to run it.
 */
export async function deleteUser(
  deps: AdminDeps,
  caller: Caller,
  meta: RequestMeta,
  input: { userId: string; actionProof: string },
): Promise<void> {
  validUserId(input.userId);
  const self = caller.kind === "user" && caller.userId === input.userId;
  if (caller.kind === "user" && self) {
    // Spent before the deletion is tried: a proof confirms one attempt.
    await consumeActionProof(deps, caller, input.actionProof);
  } else {
    requireDeploymentAdmin(caller);
  }
  await deps.pool.transaction(async (tx) => {
    if (!(await lockUser(tx, input.userId))) throw notFound();
    const user = (await findAdminUser(tx, input.userId)) as AdminUserRow;
    const stranded = await workspacesWhereLastOwner(tx, input.userId);
    if (stranded.length > 0) {
      throw new FailedPreconditionError(
        "LAST_OWNER",
        `the user is the last owner of ${stranded.length} workspace(s) with other members; make someone else owner first`,
      );
    }
    await eraseUser(tx, { id: user.id, emailNormalized: user.email_normalized });
    // No address or name in the event: the id alone stays, as a tombstone.
    await audit(tx, deps, meta, {
      type: "user_deleted",
      workspaceId: self ? callerWorkspace(caller) : null,
      userId: input.userId,
      actor: actorOf(caller),
      outcome: "success",
      details: { self },
    });
  });
  await deps.revocations.changed();
}
