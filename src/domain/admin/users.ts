import { createHash } from "node:crypto";
import type { DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { withTenant } from "../../db/with-tenant.js";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../../errors.js";
import {
  type AdminUserRow,
  eraseUser,
  findAdminUser,
  listAdminUsers,
  lockUser,
  memberRoleIn,
  setUserBlocked,
  setUserMetadata,
  workspacesWhereLastOwner,
} from "../../repositories/admin-users.js";
import { clearLoginFailures } from "../../repositories/login-failures.js";
import {
  type Role,
  setMembershipMetadata,
  vouchForMemberEmail,
} from "../../repositories/memberships.js";
import { revokeSessions } from "../../repositories/sessions.js";
import { normalizeEmail, vouchForAccount } from "../../repositories/users.js";
import { consumeActionProof } from "../action-proofs.js";
import {
  actorOf,
  type Caller,
  callerWorkspace,
  requireDeploymentAdmin,
  requireDeploymentRead,
  requireOwnerPower,
  requireWorkspaceAdmin,
  requireWorkspaceRead,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { decodePageToken, encodePageToken, pageSize } from "../pagination.js";
import { Violations } from "../validate.js";

/**
 * AdminService's user RPCs. A deployment-wide key sees every user; a workspace-scoped caller
 * (a key of a workspace, or a workspace's owner or admin) sees only the members of its own
 * workspace, and anyone else is NOT_FOUND to it, exactly like a user that does not exist
 * (SECURITY.md 21).
 */

export const maxMetadataBytes = 16 * 1024;
const maxBlockReasonLength = 1000;

const notFound = () => new NotFoundError("user not found");

/**
 * Runs `fn` deployment-wide for deployment keys, or in the caller's workspace (row-level
 * security on) for workspace-scoped callers.
 */
function inCallerScope<T>(
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
async function visibleUser(
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

/** An owner's view is changed only by an owner (or a key no admin minted), as UpdateMember. */
function requirePowerOver(caller: Caller, role: Role | null): void {
  if (role === "owner") requireOwnerPower(caller);
}

function validUserId(userId: string): void {
  new Violations().required("user_id", userId, 36).uuid("user_id", userId).throwIfAny();
}

/**
 * The workspace whose view a call reads or writes: the one it names, else the caller's own;
 * null for a deployment-wide caller naming none (the account itself).
 */
function viewOf(caller: Caller, workspaceId: string): string | null {
  return workspaceId !== "" ? workspaceId : callerWorkspace(caller);
}

/** Workspace admin of the view's workspace, or deployment admin for the account itself. */
function requireAdminOf(caller: Caller, view: string | null): void {
  if (view === null) requireDeploymentAdmin(caller);
  else requireWorkspaceAdmin(caller, view);
}

export async function getUser(
  deps: AdminDeps,
  caller: Caller,
  input: { userId: string; workspaceId: string },
): Promise<AdminUserRow> {
  validUserId(input.userId);
  new Violations().uuid("workspace_id", input.workspaceId).throwIfAny();
  const view = viewOf(caller, input.workspaceId);
  if (view === null) requireDeploymentRead(caller);
  else requireWorkspaceRead(caller, view);
  return inCallerScope(deps, callerWorkspace(caller), async (tx) => {
    return (await visibleUser(tx, view, input.userId)).user;
  });
}

export type UserStatus = "any" | "active" | "blocked";

const listName = "admin_users";
const cursor = z.object({ e: z.string(), i: z.uuid(), q: z.string() });

export async function listUsers(
  deps: AdminDeps,
  caller: Caller,
  input: {
    pageSize: number;
    pageToken: string;
    emailPrefix: string;
    status: UserStatus;
    workspaceId: string;
  },
): Promise<{ users: readonly AdminUserRow[]; nextPageToken: string }> {
  const own = callerWorkspace(caller);
  const v = new Violations().uuid("workspace_id", input.workspaceId);
  if (input.emailPrefix.length > 320) v.add("email_prefix", "is longer than 320 characters");
  if (own !== null && input.workspaceId === "")
    v.add("workspace_id", "is required for workspace-scoped callers");
  v.throwIfAny();
  if (own === null) requireDeploymentRead(caller);
  else requireWorkspaceRead(caller, input.workspaceId);

  const emailPrefix = normalizeEmail(input.emailPrefix);
  const workspaceId = input.workspaceId === "" ? null : input.workspaceId;
  // A token only continues the query it came from: the filters are part of it.
  const query = createHash("sha256")
    .update(JSON.stringify([emailPrefix, input.status, workspaceId]))
    .digest("base64url")
    .slice(0, 16);
  const after = decodePageToken(input.pageToken, listName, cursor);
  if (after && after.q !== query) {
    throw new InvalidArgumentError(
      [{ field: "page_token", description: "is malformed or belongs to another list" }],
      "INVALID_PAGE_TOKEN",
    );
  }
  const limit = pageSize(input.pageSize);
  const rows = await inCallerScope(deps, own, (tx) =>
    listAdminUsers(tx, {
      emailPrefix,
      blocked: input.status === "any" ? null : input.status === "blocked",
      workspaceId,
      after: after ? { email: after.e, id: after.i } : null,
      limit: limit + 1,
    }),
  );
  const users = rows.slice(0, limit);
  const last = users.at(-1);
  return {
    users,
    nextPageToken:
      rows.length > limit && last
        ? encodePageToken(listName, { e: last.email_normalized, i: last.id, q: query })
        : "",
  };
}

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

export async function markUserEmailVerified(
  deps: AdminDeps,
  caller: Caller,
  meta: RequestMeta,
  userId: string,
): Promise<AdminUserRow> {
  const workspaceId = callerWorkspace(caller);
  requireAdminOf(caller, workspaceId);
  validUserId(userId);
  return inCallerScope(deps, workspaceId, async (tx) => {
    const { role } = await visibleUser(tx, workspaceId, userId, true);
    requirePowerOver(caller, role);
    // A deployment admin speaks for the address everywhere; a workspace only for itself: its
    // word satisfies its own require_email_verification (SECURITY.md 29).
    if (workspaceId === null) await vouchForAccount(tx, userId, deps.clock.now());
    else await vouchForMemberEmail(tx, workspaceId, userId);
    await audit(tx, deps, meta, {
      type: "email_marked_verified",
      workspaceId,
      userId,
      actor: actorOf(caller),
      outcome: "success",
      details: { scope: workspaceId === null ? "account" : "workspace" },
    });
    return (await findAdminUser(tx, userId, workspaceId)) as AdminUserRow;
  });
}

/** Serialized size of a metadata object, as the limit counts it (compact JSON, UTF-8). */
export function metadataBytes(metadata: Record<string, unknown>): number {
  return Buffer.byteLength(JSON.stringify(metadata), "utf8");
}

/**
 * How deeply metadata may nest. Every level of a google.protobuf.Struct costs two or three
 * levels of message in the binary form, and protobuf decoders stop at 100: deeper metadata
 * would be stored, then break every gRPC answer that carries it.
 */
export const maxMetadataDepth = 16;

function depthOf(value: unknown): number {
  if (typeof value !== "object" || value === null) return 0;
  let deepest = 0;
  for (const v of Object.values(value)) deepest = Math.max(deepest, depthOf(v));
  return deepest + 1;
}

/** A UTF-16 surrogate without its pair: no UTF-8 (nor PostgreSQL's jsonb) can hold it. */
const loneSurrogate = /[\uD800-\uDFFF]/u;

function hasLoneSurrogate(value: unknown): boolean {
  if (typeof value === "string") return loneSurrogate.test(value);
  if (typeof value !== "object" || value === null) return false;
  for (const [k, v] of Object.entries(value))
    if (loneSurrogate.test(k) || hasLoneSurrogate(v)) return true;
  return false;
}

export function checkMetadataSize(field: string, metadata: Record<string, unknown>): void {
  if (hasLoneSurrogate(metadata))
    new Violations()
      .add(field, "holds a lone UTF-16 surrogate, which is not text (invalid UTF-8)")
      .throwIfAny();
  if (metadataBytes(metadata) > maxMetadataBytes) {
    new Violations()
      .add(field, `is larger than ${maxMetadataBytes} bytes serialized as JSON`)
      .throwIfAny();
  }
  if (depthOf(metadata) > maxMetadataDepth) {
    new Violations()
      .add(field, `nests objects and lists more than ${maxMetadataDepth} levels deep`)
      .throwIfAny();
  }
}

/**
 * Replaces or merges a metadata object: the membership's in the view's workspace, which no
 * other workspace reads (SECURITY.md 29), or the account's own for a deployment admin naming
 * no workspace.
 */
export async function updateUserMetadata(
  deps: AdminDeps,
  caller: Caller,
  meta: RequestMeta,
  input: {
    userId: string;
    workspaceId: string;
    metadata: Record<string, unknown> | undefined;
    merge: boolean;
  },
): Promise<AdminUserRow> {
  const v = new Violations()
    .required("user_id", input.userId, 36)
    .uuid("user_id", input.userId)
    .uuid("workspace_id", input.workspaceId);
  const metadata = input.metadata;
  if (metadata === undefined) v.add("metadata", "is required (an empty object clears it)");
  else if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata))
    v.add("metadata", "is not a JSON object");
  v.throwIfAny();
  const view = viewOf(caller, input.workspaceId);
  requireAdminOf(caller, view);
  const incoming = metadata as Record<string, unknown>;
  // Checked before the merge too, so an oversized request is refused without a lookup.
  checkMetadataSize("metadata", incoming);
  return inCallerScope(deps, callerWorkspace(caller), async (tx) => {
    const { user, role } = await visibleUser(tx, view, input.userId, true);
    requirePowerOver(caller, role);
    const next = input.merge ? { ...user.metadata, ...incoming } : incoming;
    checkMetadataSize("metadata", next);
    if (view === null) await setUserMetadata(tx, input.userId, next);
    else
      await setMembershipMetadata(tx, { workspaceId: view, userId: input.userId, metadata: next });
    await audit(tx, deps, meta, {
      type: "user_metadata_updated",
      workspaceId: view,
      userId: input.userId,
      actor: actorOf(caller),
      outcome: "success",
      details: {
        merge: input.merge,
        bytes: metadataBytes(next),
        scope: view === null ? "account" : "workspace",
      },
    });
    return (await findAdminUser(tx, input.userId, view)) as AdminUserRow;
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
  if (scope === null) requireDeploymentAdmin(caller);
  else requireWorkspaceAdmin(caller, scope);
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
