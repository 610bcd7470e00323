import { generateAdminKey } from "../../crypto/admin-key.js";
import { InvalidArgumentError, PermissionDeniedError } from "../../errors.js";
import { adminKeyExpiry } from "../../repositories/admin-key-management.js";
import {
  type AdminKeyRow,
  adminKeyCreatedDetails,
  insertAdminKey,
} from "../../repositories/admin-keys.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import {
  actorOf,
  auditedCaller,
  type Caller,
  requireDeploymentAdmin,
  requireWorkspaceAdmin,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AuthDeps, RequestMeta } from "../deps.js";
import { Violations } from "../validate.js";
import { inKeyScope } from "./keys-scope.js";

export interface CreateAdminKeyInput {
  readonly name: string;
  /** Empty for a deployment-wide key. */
  readonly workspaceId: string;
  /** undefined: unspecified or unknown in the request. */
  readonly role: "read_only" | "admin" | undefined;
  readonly introspect: boolean;
  readonly expireTime: Date | undefined;
}

/** PostgreSQL and JavaScript both hold this; later is a mistake, not a wish. */
const latestExpiry = Date.UTC(9999, 11, 31, 23, 59, 59);

/**
 * CreateAdminKey: the secret is answered once and only its SHA-256 stored. A key never gets
 * more than its creator has: workspace admin for a workspace key (so a workspace-scoped or
 * read-only key cannot make a deployment key, a key for another workspace, or any key at
 * all), introspection only from a key that has it (users have none), and no later expiry than
 * the creating key's (a key made without one inherits it). A key a signed-in user mints (or a
 * key of theirs does) names that user, lives while they are an owner or admin of the
 * workspace, never above their role, and at most `adminKeyMaxLifetimeDays` (SECURITY.md 32).
 */
export async function createAdminKey(
  deps: Pick<AuthDeps, "pool" | "clock" | "settings">,
  meta: RequestMeta,
  caller: Caller,
  input: CreateAdminKeyInput,
): Promise<{ key: AdminKeyRow; secret: string }> {
  const now = deps.clock.now();
  const v = new Violations()
    .required("name", input.name, 200)
    .uuid("workspace_id", input.workspaceId);
  if (input.role === undefined) {
    v.add("role", "must be ADMIN_KEY_ROLE_READ_ONLY or ADMIN_KEY_ROLE_ADMIN");
  }
  if (input.expireTime !== undefined) {
    const at = input.expireTime.getTime();
    if (!Number.isFinite(at) || at > latestExpiry) v.add("expire_time", "is out of range");
    else if (at <= now.getTime()) v.add("expire_time", "must be in the future");
  }
  v.throwIfAny();
  const role = input.role as "read_only" | "admin";
  const workspaceId = input.workspaceId === "" ? null : input.workspaceId;

  if (workspaceId === null) requireDeploymentAdmin(caller);
  else requireWorkspaceAdmin(caller, workspaceId);
  if (input.introspect && !(caller.kind === "admin_key" && caller.introspect)) {
    throw new PermissionDeniedError(
      "PERMISSION_DENIED",
      "only a caller that may introspect can create a key that may",
    );
  }
  let expiresAt = input.expireTime ?? null;
  if (caller.kind === "admin_key") {
    const creator = await adminKeyExpiry(deps.pool, {
      id: caller.keyId,
      workspaceId: caller.workspaceId,
    });
    const limit = creator?.expiresAt ?? null;
    if (limit !== null) {
      if (expiresAt === null) expiresAt = new Date(limit);
      else if (expiresAt.getTime() > limit) {
        throw new PermissionDeniedError(
          "PERMISSION_DENIED",
          "a key cannot expire later than the key that creates it",
        );
      }
    }
  }

  const creatorUserId = caller.kind === "user" ? caller.userId : caller.creatorUserId;
  if (creatorUserId !== null) {
    const days = deps.settings.adminKeyMaxLifetimeDays;
    const longest = now.getTime() + days * 86_400_000;
    if (expiresAt === null) expiresAt = new Date(longest);
    else if (expiresAt.getTime() > longest) {
      throw new InvalidArgumentError([
        { field: "expire_time", description: `is more than ${days} days away` },
      ]);
    }
  }
  const generated = generateAdminKey();
  const key = await inKeyScope(deps, workspaceId, async (tx) => {
    if (workspaceId !== null && (await findWorkspaceById(tx, workspaceId)) === null) {
      throw new InvalidArgumentError([
        { field: "workspace_id", description: "names no workspace" },
      ]);
    }
    const row = await insertAdminKey(tx, {
      workspaceId,
      name: input.name,
      prefix: generated.prefix,
      hash: generated.hash,
      role,
      introspect: input.introspect,
      createdBy: actorOf(caller),
      createdByUserId: creatorUserId,
      expiresAt,
      now,
    });
    await audit(tx, deps, meta, {
      type: "admin_key_created",
      workspaceId,
      ...auditedCaller(caller),
      outcome: "success",
      details: adminKeyCreatedDetails(row),
    });
    return row;
  });
  return { key, secret: generated.secret };
}
