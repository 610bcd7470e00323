import { createHash } from "node:crypto";
import { z } from "zod";
import { InvalidArgumentError } from "../../errors.js";
import {
  type AdminUserRow,
  findAdminUser,
  listAdminUsers,
  setUserMetadata,
} from "../../repositories/admin-users.js";
import { setMembershipMetadata, vouchForMemberEmail } from "../../repositories/memberships.js";
import { normalizeEmail, vouchForAccount } from "../../repositories/users.js";
import {
  actorOf,
  type Caller,
  callerWorkspace,
  requireDeploymentRead,
  requirePowerOver,
  requireWorkspaceRead,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { decodePageToken, pageOf, pageSize } from "../pagination.js";
import { Violations } from "../validate.js";
import { inCallerScope, requireAdminOf, validUserId, viewOf, visibleUser } from "./users-scope.js";

/**
 * AdminService's user RPCs that read and edit users (blocking, ending sessions and erasure are
 * in users-access.ts). A deployment-wide key sees every user; a workspace-scoped caller (a key
 * of a workspace, or a workspace's owner or admin) sees only the members of its own workspace,
 * and anyone else is NOT_FOUND to it, exactly like a user that does not exist (SECURITY.md 21).
 */

export const maxMetadataBytes = 16 * 1024;

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
  const { page, nextPageToken } = pageOf(rows, limit, listName, (last) => ({
    e: last.email_normalized,
    i: last.id,
    q: query,
  }));
  return { users: page, nextPageToken };
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
