import { UniqueIntegrityConstraintViolationError } from "slonik";
import { z } from "zod";
import type { WorkspaceSettings } from "../../config.js";
import { withTenant } from "../../db/with-tenant.js";
import { AlreadyExistsError, NotFoundError, PermissionDeniedError } from "../../errors.js";
import {
  deleteWorkspaceById,
  insertWorkspaceWithSettings,
  listWorkspacesPage,
  mergeWorkspaceSettings,
  updateWorkspaceNameSlug,
} from "../../repositories/admin-workspaces.js";
import { insertMembershipIfAbsent, markClaimed } from "../../repositories/memberships.js";
import { findUserById } from "../../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../../repositories/workspaces.js";
import {
  actorOf,
  type Caller,
  callerWorkspace,
  requireDeploymentAdmin,
  requireWorkspaceAdmin,
  requireWorkspaceRead,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { joining, sendInvitation } from "../invitation.js";
import { decodePageToken, pageOf, pageSize } from "../pagination.js";
import { effectiveSettings } from "../settings.js";
import { slugPattern, Violations } from "../validate.js";
import {
  type SettingsPatch,
  validateResetPaths,
  validateSettingsPatch,
} from "./workspaces-settings.js";

/** ALREADY_EXISTS for a taken slug, with the field in the error's BadRequest detail. */
export class SlugTakenError extends AlreadyExistsError {
  readonly violations = [{ field: "slug", description: "is taken by another workspace" }];
  constructor() {
    super("slug: is taken by another workspace", "slug");
  }
}

/** Turns the unique violation of workspaces.slug into SlugTakenError. */
async function slugUnique<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (
      error instanceof UniqueIntegrityConstraintViolationError &&
      error.constraint === "workspaces_slug_key"
    )
      throw new SlugTakenError();
    throw error;
  }
}

const workspaceNotFound = () => new NotFoundError("workspace not found");

function validateWorkspaceId(workspaceId: string): void {
  new Violations()
    .required("workspace_id", workspaceId)
    .uuid("workspace_id", workspaceId)
    .throwIfAny();
}

function checkName(v: Violations, name: string): void {
  v.displayName("name", name, 200);
}

function checkSlug(v: Violations, slug: string): void {
  if (slug === "") v.add("slug", "is required");
  else if (!slugPattern.test(slug))
    v.add(
      "slug",
      "must be 1-63 lower-case letters, digits or dashes, not starting or ending with -",
    );
}

export interface WorkspaceWithSettings {
  readonly workspace: WorkspaceRow;
  readonly settings: WorkspaceSettings;
}

const withEffective = (deps: AdminDeps, workspace: WorkspaceRow): WorkspaceWithSettings => ({
  workspace,
  settings: effectiveSettings(workspace, deps.settings.workspaceDefaults),
});

/** CreateWorkspace: deployment admin; optionally with settings and an existing owner. */
export async function createWorkspace(
  deps: AdminDeps,
  meta: RequestMeta,
  caller: Caller,
  input: { name: string; slug: string; settings: SettingsPatch; ownerUserId: string },
): Promise<WorkspaceWithSettings> {
  requireDeploymentAdmin(caller);
  const v = new Violations();
  checkName(v, input.name);
  checkSlug(v, input.slug);
  const settings = validateSettingsPatch(input.settings, "settings", v);
  v.uuid("owner_user_id", input.ownerUserId);
  v.throwIfAny();
  let mailed = false;
  const workspace = await slugUnique(
    deps.pool.transaction(async (tx) => {
      const owner = input.ownerUserId === "" ? null : await findUserById(tx, input.ownerUserId);
      if (input.ownerUserId !== "" && !owner) throw new NotFoundError("owner user not found");
      const row = await insertWorkspaceWithSettings(tx, {
        name: input.name.trim(),
        slug: input.slug,
        settings,
      });
      if (owner) {
        await insertMembershipIfAbsent(tx, {
          workspaceId: row.id,
          userId: owner.id,
          role: "owner",
        });
        // As AddMember from a deployment admin: a password nobody tied to the mailbox does
        // not open the new workspace until the owner proves the address (SECURITY.md 28).
        const how = joining({ user: owner, created: false, byDeployment: true });
        if (how.claimed)
          await markClaimed(tx, { workspaceId: row.id, userId: owner.id, now: deps.clock.now() });
        if (how.mailed) {
          await sendInvitation(tx, deps, { workspace: row, user: owner });
          mailed = true;
        }
      }
      await audit(tx, deps, meta, {
        type: "workspace_created",
        workspaceId: row.id,
        userId: owner?.id ?? null,
        actor: actorOf(caller),
        outcome: "success",
        details: { slug: row.slug, ...(owner ? { owner_user_id: owner.id } : {}) },
      });
      return row;
    }),
  );
  if (mailed) deps.mail.wake();
  return withEffective(deps, workspace);
}

/** GetWorkspace: workspace read; the workspace with its effective settings. */
export async function getWorkspace(
  deps: AdminDeps,
  caller: Caller,
  workspaceId: string,
): Promise<WorkspaceWithSettings> {
  validateWorkspaceId(workspaceId);
  requireWorkspaceRead(caller, workspaceId);
  const row = await withTenant(deps.pool, workspaceId, (tx) => findWorkspaceById(tx, workspaceId));
  if (!row) throw workspaceNotFound();
  return withEffective(deps, row);
}

const workspacesCursor = z.object({ w: z.uuid() });
const slugPrefixPattern = /^[a-z0-9-]{0,63}$/;

/**
 * ListWorkspaces: deployment read sees every workspace; a workspace-scoped caller (with
 * workspace read on its own) sees only its own. Id order, stable across pages.
 */
export async function listWorkspaces(
  deps: AdminDeps,
  caller: Caller,
  input: { pageSize: number; pageToken: string; slugPrefix: string },
): Promise<{ workspaces: readonly WorkspaceRow[]; nextPageToken: string }> {
  const own = callerWorkspace(caller);
  if (own !== null) requireWorkspaceRead(caller, own);
  if (!slugPrefixPattern.test(input.slugPrefix))
    new Violations().add("slug_prefix", "may hold only a-z, 0-9 and -").throwIfAny();
  const limit = pageSize(input.pageSize);
  const cursor = decodePageToken(input.pageToken, "workspaces", workspacesCursor);
  const query = {
    onlyId: own,
    slugPrefix: input.slugPrefix,
    afterId: cursor?.w ?? null,
    limit: limit + 1,
  };
  const rows =
    own === null
      ? await listWorkspacesPage(deps.pool, query)
      : await withTenant(deps.pool, own, (tx) => listWorkspacesPage(tx, query));
  const { page, nextPageToken } = pageOf(rows, limit, "workspaces", (last) => ({ w: last.id }));
  return { workspaces: page, nextPageToken };
}

/** UpdateWorkspace: workspace admin; changes the name and/or the slug (empty: unchanged). */
export async function updateWorkspace(
  deps: AdminDeps,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; name: string; slug: string },
): Promise<WorkspaceRow> {
  validateWorkspaceId(input.workspaceId);
  requireWorkspaceAdmin(caller, input.workspaceId);
  const v = new Violations();
  if (input.name !== "") checkName(v, input.name);
  if (input.slug !== "") checkSlug(v, input.slug);
  v.throwIfAny();
  const { workspaceId } = input;
  return slugUnique(
    withTenant(deps.pool, workspaceId, async (tx) => {
      if (input.name === "" && input.slug === "") {
        const row = await findWorkspaceById(tx, workspaceId);
        if (!row) throw workspaceNotFound();
        return row;
      }
      const row = await updateWorkspaceNameSlug(tx, {
        workspaceId,
        name: input.name === "" ? null : input.name.trim(),
        slug: input.slug === "" ? null : input.slug,
      });
      if (!row) throw workspaceNotFound();
      await audit(tx, deps, meta, {
        type: "workspace_updated",
        workspaceId,
        actor: actorOf(caller),
        outcome: "success",
        details: {
          ...(input.name !== "" ? { name: row.name } : {}),
          ...(input.slug !== "" ? { slug: row.slug } : {}),
        },
      });
      return row;
    }),
  );
}

/**
 * UpdateWorkspaceSettings: workspace admin. Given fields are merged into the stored ones,
 * reset paths are removed so they take the server defaults; answers the effective settings.
 */
export async function updateWorkspaceSettings(
  deps: AdminDeps,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; settings: SettingsPatch; resetPaths: readonly string[] },
): Promise<WorkspaceSettings> {
  validateWorkspaceId(input.workspaceId);
  requireWorkspaceAdmin(caller, input.workspaceId);
  const v = new Violations();
  const patch = validateSettingsPatch(input.settings, "settings", v);
  const resetKeys = validateResetPaths(input.resetPaths, input.settings, v);
  v.throwIfAny();
  const { workspaceId } = input;
  const row = await withTenant(deps.pool, workspaceId, async (tx) => {
    const updated = await mergeWorkspaceSettings(tx, { workspaceId, patch, resetKeys });
    if (!updated) throw workspaceNotFound();
    const details: Record<string, string | number | boolean> = {};
    for (const [key, value] of Object.entries(patch)) {
      if (typeof value !== "object") details[`set.${key}`] = value;
    }
    if (resetKeys.length > 0) details.reset = resetKeys.join(",");
    await audit(tx, deps, meta, {
      type: "workspace_settings_updated",
      workspaceId,
      actor: actorOf(caller),
      outcome: "success",
      details,
    });
    return updated;
  });
  return effectiveSettings(row, deps.settings.workspaceDefaults);
}

/**
 * DeleteWorkspace: deployment admin or the workspace's owner. Memberships, sessions, refresh
 * tokens, codes and keys go by cascade; the workspace's access tokens die with their
 * sessions, since every signed-in call checks the live session. The audit event outlives
 * the workspace (audit_events has no foreign keys).
 */
export async function deleteWorkspace(
  deps: AdminDeps,
  meta: RequestMeta,
  caller: Caller,
  workspaceId: string,
): Promise<void> {
  validateWorkspaceId(workspaceId);
  const isOwner =
    caller.kind === "user" && caller.workspaceId === workspaceId && caller.role === "owner";
  if (!isOwner) {
    try {
      requireDeploymentAdmin(caller);
    } catch {
      throw new PermissionDeniedError(
        "PERMISSION_DENIED",
        "only a deployment admin or the workspace's owner may delete it",
      );
    }
  }
  // Deployment-wide work: the cascade reaches every tenant table of the workspace.
  await deps.pool.transaction(async (tx) => {
    const row = await findWorkspaceById(tx, workspaceId);
    if (!row || !(await deleteWorkspaceById(tx, workspaceId))) throw workspaceNotFound();
    await audit(tx, deps, meta, {
      type: "workspace_deleted",
      workspaceId,
      actor: actorOf(caller),
      outcome: "success",
      details: { slug: row.slug },
    });
  });
  await deps.revocations.changed();
}
