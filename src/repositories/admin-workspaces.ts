import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";
import { type MembershipRow, membershipColumns, membershipRow, type Role } from "./memberships.js";
import { type UserRow, userRow } from "./users.js";
import { type WorkspaceRow, workspaceRow } from "./workspaces.js";

const countRow = z.object({ count: z.number() });
const _idRow = z.object({ id: z.string() });

/** SQL behind the AdminService RPCs about workspaces, members and the audit log. */

const workspaceColumns = sql.fragment`id, name, slug, settings, created_at, updated_at`;
const memberColumns = membershipColumns;

export async function insertWorkspaceWithSettings(
  db: CommonQueryMethods,
  input: { name: string; slug: string; settings: Record<string, unknown> },
): Promise<WorkspaceRow> {
  return db.one(sql.type(workspaceRow)`
    INSERT INTO workspaces (name, slug, settings)
    VALUES (${input.name}, ${input.slug}, ${sql.jsonb(input.settings as never)})
    RETURNING ${workspaceColumns}`);
}

/**
 * The workspace, locked for the rest of the transaction: membership changes of one workspace
 * run one after another, so the last-owner rule holds under concurrency.
 */
export async function lockWorkspace(
  db: CommonQueryMethods,
  workspaceId: string,
): Promise<WorkspaceRow | null> {
  return db.maybeOne(sql.type(workspaceRow)`
    SELECT ${workspaceColumns} FROM workspaces WHERE id = ${workspaceId} FOR UPDATE`);
}

/** Workspaces in id order after `afterId`, optionally limited to one id or a slug prefix. */
export async function listWorkspacesPage(
  db: CommonQueryMethods,
  input: { onlyId: string | null; slugPrefix: string; afterId: string | null; limit: number },
): Promise<readonly WorkspaceRow[]> {
  const filters = [sql.fragment`TRUE`];
  if (input.onlyId !== null) filters.push(sql.fragment`id = ${input.onlyId}`);
  if (input.slugPrefix !== "") filters.push(sql.fragment`starts_with(slug, ${input.slugPrefix})`);
  if (input.afterId !== null) filters.push(sql.fragment`id > ${input.afterId}::uuid`);
  return db.any(sql.type(workspaceRow)`
    SELECT ${workspaceColumns} FROM workspaces
    WHERE ${sql.join(filters, sql.fragment` AND `)}
    ORDER BY id
    LIMIT ${input.limit}`);
}

/** Changes the name and/or slug; answers null when the workspace does not exist. */
export async function updateWorkspaceNameSlug(
  db: CommonQueryMethods,
  input: { workspaceId: string; name: string | null; slug: string | null },
): Promise<WorkspaceRow | null> {
  return db.maybeOne(sql.type(workspaceRow)`
    UPDATE workspaces
    SET name = coalesce(${input.name}::text, name), slug = coalesce(${input.slug}::text, slug),
        updated_at = now()
    WHERE id = ${input.workspaceId}
    RETURNING ${workspaceColumns}`);
}

/**
 * Merges `patch` into the stored settings and removes `resetKeys`, in one statement so that
 * concurrent updates of different keys do not lose each other.
 */
export async function mergeWorkspaceSettings(
  db: CommonQueryMethods,
  input: { workspaceId: string; patch: Record<string, unknown>; resetKeys: readonly string[] },
): Promise<WorkspaceRow | null> {
  return db.maybeOne(sql.type(workspaceRow)`
    UPDATE workspaces
    SET settings = (settings - ${sql.array(input.resetKeys, "text")}) || ${sql.jsonb(input.patch as never)},
        updated_at = now()
    WHERE id = ${input.workspaceId}
    RETURNING ${workspaceColumns}`);
}

/** Deletes the workspace; memberships, sessions, tokens, codes and keys go by cascade. */
export async function deleteWorkspaceById(
  db: CommonQueryMethods,
  workspaceId: string,
): Promise<boolean> {
  const result = await db.query(
    sql.type(voidRow)`DELETE FROM workspaces WHERE id = ${workspaceId}`,
  );
  return result.rowCount > 0;
}

export async function updateMembership(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string;
    role: Role | null;
    status: "active" | "disabled" | null;
    /** Cuts off the membership's tokens issued until then (a revocation, migrations/015). */
    tokensValidAfter: Date | null;
  },
): Promise<MembershipRow | null> {
  const cutOff = input.tokensValidAfter ? sql.timestamp(input.tokensValidAfter) : null;
  return db.maybeOne(sql.type(membershipRow)`
    UPDATE workspace_members
    SET role = coalesce(${input.role}::text, role), status = coalesce(${input.status}::text, status),
        tokens_valid_after = coalesce(${cutOff}::timestamptz, tokens_valid_after),
        updated_at = now()
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}
    RETURNING ${memberColumns}`);
}

export async function deleteMembership(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<boolean> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM workspace_members WHERE workspace_id = ${workspaceId} AND user_id = ${userId}`);
  return result.rowCount > 0;
}

/** Active owners of the workspace other than `exceptUserId`. */
export async function countOtherActiveOwners(
  db: CommonQueryMethods,
  workspaceId: string,
  exceptUserId: string,
): Promise<number> {
  return db.oneFirst(sql.type(countRow)`
    SELECT count(*)::int AS count FROM workspace_members
    WHERE workspace_id = ${workspaceId} AND role = 'owner' AND status = 'active'
      AND user_id <> ${exceptUserId}`);
}

/** Members of the workspace in user id order after `afterUserId`. */
export async function listMembersPage(
  db: CommonQueryMethods,
  input: { workspaceId: string; afterUserId: string | null; limit: number },
): Promise<readonly MembershipRow[]> {
  return db.any(sql.type(membershipRow)`
    SELECT ${memberColumns} FROM workspace_members
    WHERE workspace_id = ${input.workspaceId}
      AND (${input.afterUserId}::uuid IS NULL OR user_id > ${input.afterUserId}::uuid)
    ORDER BY user_id
    LIMIT ${input.limit}`);
}

export async function findUsersByIds(
  db: CommonQueryMethods,
  ids: readonly string[],
): Promise<readonly UserRow[]> {
  if (ids.length === 0) return [];
  return db.any(sql.type(userRow)`
    SELECT id, email, email_normalized, password_hash, email_verified, blocked, metadata,
           tokens_valid_after, otp_login_opt_in, password_proven_at, created_at, updated_at
    FROM users WHERE id = ANY(${sql.array(ids, "uuid")})`);
}

export const auditEventRow = z.object({
  id: z.string(),
  workspace_id: z.string().nullable(),
  type: z.string(),
  user_id: z.string().nullable(),
  session_id: z.string().nullable(),
  actor: z.string().nullable(),
  ip_address: z.string().nullable(),
  user_agent: z.string().nullable(),
  outcome: z.enum(["success", "failure"]),
  details: z.record(z.string(), z.unknown()),
  request_id: z.string().nullable(),
  created_at: z.number(),
  /** created_at to the microsecond, for the page cursor (created_at itself is in ms). */
  cursor_at: z.string(),
});
export type AuditEventRow = z.infer<typeof auditEventRow>;

/**
 * Audit events, newest first (created_at, then id), before the cursor. `workspaceId` null
 * means every workspace (deployment-wide callers only).
 */
export async function listAuditEventsPage(
  db: CommonQueryMethods,
  input: {
    workspaceId: string | null;
    types: readonly string[];
    userId: string | null;
    start: Date | null;
    end: Date | null;
    before: { at: string; id: string } | null;
    limit: number;
  },
): Promise<readonly AuditEventRow[]> {
  const filters = [sql.fragment`TRUE`];
  if (input.workspaceId !== null) filters.push(sql.fragment`workspace_id = ${input.workspaceId}`);
  if (input.types.length > 0)
    filters.push(sql.fragment`type = ANY(${sql.array(input.types, "text")})`);
  if (input.userId !== null) filters.push(sql.fragment`user_id = ${input.userId}`);
  if (input.start !== null) filters.push(sql.fragment`created_at >= ${sql.timestamp(input.start)}`);
  if (input.end !== null) filters.push(sql.fragment`created_at < ${sql.timestamp(input.end)}`);
  if (input.before !== null)
    filters.push(
      sql.fragment`(created_at, id) < (${input.before.at}::timestamptz, ${input.before.id}::uuid)`,
    );
  return db.any(sql.type(auditEventRow)`
    SELECT id, workspace_id, type, user_id, session_id, actor, ip_address, user_agent, outcome,
           details, request_id, created_at,
           to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS cursor_at
    FROM audit_events
    WHERE ${sql.join(filters, sql.fragment` AND `)}
    ORDER BY created_at DESC, id DESC
    LIMIT ${input.limit}`);
}
