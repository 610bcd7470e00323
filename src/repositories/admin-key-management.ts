import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";
import { type AdminKeyRow, adminKeyRow } from "./admin-keys.js";

const expiresAtRow = z.object({ expires_at: z.number().nullable() });

/**
 * Admin keys as AdminService manages them. A key belongs to one workspace or (workspace_id
 * NULL) to the deployment; every function says which keys it may touch: one workspace's, or
 * the whole deployment's for deployment-wide callers. Never reads or returns the secret hash.
 */

/** Whose keys a query may see: one workspace's, or every key (deployment-wide callers). */
export type AdminKeyScope = { readonly workspaceId: string } | { readonly deployment: true };

const columns = sql.fragment`
  id, workspace_id, name, prefix, role, introspect, created_by, created_by_user_id, created_at,
  last_used_at, expires_at, revoked_at`;

const scopeCondition = (scope: AdminKeyScope) =>
  "workspaceId" in scope ? sql.fragment`workspace_id = ${scope.workspaceId}` : sql.fragment`TRUE`;

/** A key by id, among the keys `scope` may see. */
export async function findAdminKey(
  db: CommonQueryMethods,
  scope: AdminKeyScope,
  id: string,
): Promise<AdminKeyRow | null> {
  return db.maybeOne(sql.type(adminKeyRow)`
    SELECT ${columns} FROM admin_keys WHERE id = ${id} AND ${scopeCondition(scope)}`);
}

/**
 * Sets revoked_at once (a second revocation keeps the first time). `workspaceId` is the key's
 * own (null for a deployment-wide key), so the update cannot reach another workspace's key.
 * Answers the key and whether this call revoked it.
 */
export async function revokeAdminKey(
  db: CommonQueryMethods,
  key: { id: string; workspaceId: string | null },
  now: Date,
): Promise<{ key: AdminKeyRow; revoked: boolean } | null> {
  const revoked = await db.maybeOne(sql.type(adminKeyRow)`
    UPDATE admin_keys SET revoked_at = ${sql.timestamp(now)}
    WHERE id = ${key.id} AND workspace_id IS NOT DISTINCT FROM ${key.workspaceId}
      AND revoked_at IS NULL
    RETURNING ${columns}`);
  if (revoked) return { key: revoked, revoked: true };
  const existing = await db.maybeOne(sql.type(adminKeyRow)`
    SELECT ${columns} FROM admin_keys
    WHERE id = ${key.id} AND workspace_id IS NOT DISTINCT FROM ${key.workspaceId}`);
  return existing ? { key: existing, revoked: false } : null;
}

/** When a key expires (null: never), for the key of a caller; null when it is not there. */
export async function adminKeyExpiry(
  db: CommonQueryMethods,
  key: { id: string; workspaceId: string | null },
): Promise<{ expiresAt: number | null } | null> {
  const row = await db.maybeOne(sql.type(expiresAtRow)`
    SELECT expires_at FROM admin_keys
    WHERE id = ${key.id} AND workspace_id IS NOT DISTINCT FROM ${key.workspaceId}`);
  return row ? { expiresAt: row.expires_at } : null;
}

/**
 * Position in the list order (created_at, id). created_at is kept in whole microseconds as a
 * string, PostgreSQL's own precision, so a page boundary never skips or repeats a key.
 */
export interface AdminKeyCursor {
  readonly createdAtMicros: string;
  readonly id: string;
}

const listedRow = adminKeyRow.extend({ created_at_us: z.string() });

/** Keys in a stable order (created_at, id), `limit` at most, after `after`, each with its position. */
export async function listAdminKeys(
  db: CommonQueryMethods,
  scope: AdminKeyScope,
  page: { after: AdminKeyCursor | undefined; limit: number },
): Promise<readonly { readonly row: AdminKeyRow; readonly cursor: AdminKeyCursor }[]> {
  const after = page.after
    ? sql.fragment`AND (created_at, id) > (
        'epoch'::timestamptz + ${page.after.createdAtMicros}::bigint * interval '1 microsecond',
        ${page.after.id}::uuid)`
    : sql.fragment``;
  const rows = await db.any(sql.type(listedRow)`
    SELECT ${columns},
           (extract(epoch FROM created_at) * 1000000)::bigint::text AS created_at_us
    FROM admin_keys
    WHERE ${scopeCondition(scope)} ${after}
    ORDER BY created_at, id
    LIMIT ${page.limit}`);
  return rows.map(({ created_at_us, ...row }) => ({
    row,
    cursor: { createdAtMicros: created_at_us, id: row.id },
  }));
}
