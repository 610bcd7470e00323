import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";
import { clearLoginFailures } from "./login-failures.js";
import type { Role } from "./memberships.js";
import { deliveryAddress, normalizeEmail, userRow } from "./users.js";
import { type WorkspaceRow, workspaceRow } from "./workspaces.js";

const idRow = z.object({ id: z.string() });
const roleRow = z.object({ role: z.enum(["owner", "admin", "member"]) });
const workspaceIdRow = z.object({ workspace_id: z.string() });
const userIdRow = z.object({ user_id: z.string() });

/**
 * Queries of AdminService's user RPCs. Users are not tenant-owned (one identity across
 * workspaces); every query that touches workspace_members or sessions filters by workspace
 * where the caller is workspace-scoped.
 */

/** A user with the lockout state of their address (login_failures, keyed by case-folded email). */
export const adminUserRow = userRow.extend({
  locked_until: z.number().nullable(),
  failed_login_count: z.number(),
});
export type AdminUserRow = z.infer<typeof adminUserRow>;

/**
 * The user's columns with the lockout state of their address; `metadata` is the workspace's
 * own object when the query joins its membership as `m` (a view), the account's otherwise.
 */
function adminUserColumns(view: boolean) {
  const metadata = view ? sql.fragment`m.metadata` : sql.fragment`u.metadata`;
  return sql.fragment`u.id, u.email, u.email_normalized, u.password_hash,
  u.email_verified, u.blocked, ${metadata} AS metadata, u.tokens_valid_after, u.otp_login_opt_in,
  u.password_proven_at, u.created_at, u.updated_at, f.locked_until,
  COALESCE(f.failed_count, 0)::int AS failed_login_count`;
}

/**
 * The user; with `viewOf` a workspace, as that workspace sees them (its metadata), and only
 * when they are a member there (active or disabled, not invited).
 */
export async function findAdminUser(
  db: CommonQueryMethods,
  userId: string,
  viewOf: string | null = null,
): Promise<AdminUserRow | null> {
  if (viewOf === null)
    return db.maybeOne(sql.type(adminUserRow)`
      SELECT ${adminUserColumns(false)}
      FROM users u LEFT JOIN login_failures f ON f.email_normalized = u.email_normalized
      WHERE u.id = ${userId}`);
  return db.maybeOne(sql.type(adminUserRow)`
    SELECT ${adminUserColumns(true)}
    FROM users u
      JOIN workspace_members m ON m.user_id = u.id AND m.workspace_id = ${viewOf}
        AND m.status <> 'invited'
      LEFT JOIN login_failures f ON f.email_normalized = u.email_normalized
    WHERE u.id = ${userId}`);
}

/** Locks the user's row for the rest of the transaction; answers whether it exists. */
export async function lockUser(db: CommonQueryMethods, userId: string): Promise<boolean> {
  const row = await db.maybeOne(sql.type(idRow)`
    SELECT id FROM users WHERE id = ${userId} FOR UPDATE`);
  return row !== null;
}

/**
 * The user's role in the workspace where they are a member (active or disabled), or null: an
 * invitation not yet accepted is no membership to the workspace's admin RPCs.
 */
export async function memberRoleIn(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<Role | null> {
  return db.maybeOneFirst(sql.type(roleRow)`
    SELECT role FROM workspace_members
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId} AND status <> 'invited'`);
}

/**
 * Inserts a provisioned user, or answers null when the address is taken. A concurrent insert
 * of the same address makes this wait for the other transaction and then do nothing, so the
 * caller can read the winner's row afterwards.
 */
export async function insertProvisionedUser(
  db: CommonQueryMethods,
  input: {
    email: string;
    passwordHash: string | null;
    emailVerified: boolean;
    passwordProvenAt?: Date | null;
  },
): Promise<string | null> {
  const proven = input.passwordProvenAt ? sql.timestamp(input.passwordProvenAt) : null;
  return db.maybeOneFirst(sql.type(idRow)`
    INSERT INTO users (email, email_normalized, password_hash, email_verified, password_proven_at)
    VALUES (${deliveryAddress(input.email)}, ${normalizeEmail(input.email)}, ${input.passwordHash},
            ${input.emailVerified}, ${proven})
    ON CONFLICT (email_normalized) DO NOTHING
    RETURNING id`);
}

export async function findUserIdByEmail(
  db: CommonQueryMethods,
  email: string,
): Promise<string | null> {
  return db.maybeOneFirst(sql.type(idRow)`
    SELECT id FROM users WHERE email_normalized = ${normalizeEmail(email)}`);
}

/** Inserts the workspace, or answers null when the slug is taken. */
export async function insertWorkspaceIfAbsent(
  db: CommonQueryMethods,
  input: { name: string; slug: string; settings: Record<string, unknown> },
): Promise<WorkspaceRow | null> {
  return db.maybeOne(sql.type(workspaceRow)`
    INSERT INTO workspaces (name, slug, settings)
    VALUES (${input.name}, ${input.slug}, ${sql.jsonb(input.settings as never)})
    ON CONFLICT (slug) DO NOTHING
    RETURNING id, name, slug, settings, created_at, updated_at`);
}

export async function listAdminUsers(
  db: CommonQueryMethods,
  input: {
    /** Case-folded. */
    emailPrefix: string;
    blocked: boolean | null;
    workspaceId: string | null;
    after: { email: string; id: string } | null;
    limit: number;
  },
): Promise<readonly AdminUserRow[]> {
  const filters = [sql.fragment`TRUE`];
  if (input.emailPrefix !== "")
    filters.push(
      sql.fragment`left(u.email_normalized, ${input.emailPrefix.length}) = ${input.emailPrefix}`,
    );
  if (input.blocked !== null) filters.push(sql.fragment`u.blocked = ${input.blocked}`);
  if (input.after !== null)
    filters.push(
      sql.fragment`(u.email_normalized, u.id) > (${input.after.email}, ${input.after.id}::uuid)`,
    );
  // Listing one workspace's users is listing its members, as it sees them.
  const view =
    input.workspaceId === null
      ? sql.fragment``
      : sql.fragment`JOIN workspace_members m ON m.user_id = u.id
          AND m.workspace_id = ${input.workspaceId} AND m.status <> 'invited'`;
  return db.any(sql.type(adminUserRow)`
    SELECT ${adminUserColumns(input.workspaceId !== null)}
    FROM users u ${view}
      LEFT JOIN login_failures f ON f.email_normalized = u.email_normalized
    WHERE ${sql.join(filters, sql.fragment` AND `)}
    ORDER BY u.email_normalized, u.id
    LIMIT ${input.limit}`);
}

/** Blocking also cuts off every token issued until `now` (a revocation, migrations/015). */
export async function setUserBlocked(
  db: CommonQueryMethods,
  input: { userId: string; blocked: boolean; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE users SET blocked = ${input.blocked}, updated_at = now(),
      tokens_valid_after = CASE WHEN ${input.blocked} THEN ${sql.timestamp(input.now)}
                                ELSE tokens_valid_after END
    WHERE id = ${input.userId}`);
}

export async function setUserMetadata(
  db: CommonQueryMethods,
  userId: string,
  metadata: Record<string, unknown>,
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE users SET metadata = ${sql.jsonb(metadata as never)}, updated_at = now()
    WHERE id = ${userId}`);
}

/**
 * Workspaces in which the user is the last active owner while others are members. Locks the
 * owner rows of the user's workspaces first, so a concurrent demotion or removal of the other
 * owner waits for this transaction.
 */
export async function workspacesWhereLastOwner(
  db: CommonQueryMethods,
  userId: string,
): Promise<readonly string[]> {
  await db.query(sql.type(userIdRow)`
    SELECT o.user_id FROM workspace_members o
    WHERE o.role = 'owner'
      AND o.workspace_id IN (SELECT workspace_id FROM workspace_members WHERE user_id = ${userId})
    FOR UPDATE`);
  return db.anyFirst(sql.type(workspaceIdRow)`
    SELECT m.workspace_id FROM workspace_members m
    WHERE m.user_id = ${userId} AND m.role = 'owner' AND m.status = 'active'
      AND NOT EXISTS (SELECT 1 FROM workspace_members o
        WHERE o.workspace_id = m.workspace_id AND o.user_id <> ${userId}
          AND o.role = 'owner' AND o.status = 'active')
      AND EXISTS (SELECT 1 FROM workspace_members x
        WHERE x.workspace_id = m.workspace_id AND x.user_id <> ${userId})
    ORDER BY m.workspace_id`);
}

/**
 * Erases a user: the users row (memberships, sessions, refresh tokens, codes and pending
 * logins cascade), the lockout state of their address and the mail addressed to them.
 * Audit events keep the id, as a tombstone.
 */
export async function eraseUser(
  db: CommonQueryMethods,
  user: { id: string; emailNormalized: string },
): Promise<void> {
  await db.query(sql.type(voidRow)`DELETE FROM users WHERE id = ${user.id}`);
  await clearLoginFailures(db, user.emailNormalized);
  await db.query(sql.type(voidRow)`
    DELETE FROM mail_outbox WHERE lower(btrim(recipient)) = ${user.emailNormalized}`);
}
