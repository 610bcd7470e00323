import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";
import { type Role, roles } from "./memberships.js";

export const userRow = z.object({
  id: z.string(),
  email: z.string(),
  email_normalized: z.string(),
  password_hash: z.string().nullable(),
  email_verified: z.boolean(),
  blocked: z.boolean(),
  metadata: z.record(z.string(), z.unknown()),
  tokens_valid_after: z.number().nullable(),
  otp_login_opt_in: z.boolean(),
  created_at: z.number(),
  updated_at: z.number(),
});
export type UserRow = z.infer<typeof userRow>;

const columns = sql.fragment`id, email, email_normalized, password_hash, email_verified, blocked,
  metadata, tokens_valid_after, otp_login_opt_in, created_at, updated_at`;

/** The form of an address that uniqueness and lookups use: trimmed, NFKC, lower case. */
export function normalizeEmail(email: string): string {
  return email.trim().normalize("NFKC").toLowerCase();
}

export async function findUserByEmail(
  db: CommonQueryMethods,
  email: string,
): Promise<UserRow | null> {
  return db.maybeOne(sql.type(userRow)`
    SELECT ${columns} FROM users WHERE email_normalized = ${normalizeEmail(email)}`);
}

/**
 * The account with this address and whether it is an active member of the workspace, in one
 * statement outside the tenant role: login must know both before it checks a password.
 */
export async function findUserForLogin(
  db: CommonQueryMethods,
  workspaceId: string,
  email: string,
): Promise<{ user: UserRow; role: Role | null } | null> {
  const row = await db.maybeOne(sql.type(userRow.extend({ member_role: z.enum(roles).nullable() }))`
    SELECT ${columns}, (
      SELECT m.role FROM workspace_members m
      WHERE m.workspace_id = ${workspaceId} AND m.user_id = users.id AND m.status = 'active'
    ) AS member_role
    FROM users WHERE email_normalized = ${normalizeEmail(email)}`);
  if (!row) return null;
  const { member_role, ...user } = row;
  return { user, role: member_role };
}

export async function findUserById(db: CommonQueryMethods, id: string): Promise<UserRow | null> {
  return db.maybeOne(sql.type(userRow)`SELECT ${columns} FROM users WHERE id = ${id}`);
}

/** Inserts a user, or answers null when the address is taken (checked by the caller). */
export async function insertUser(
  db: CommonQueryMethods,
  input: { email: string; passwordHash: string | null; emailVerified?: boolean },
): Promise<UserRow | null> {
  return db.maybeOne(sql.type(userRow)`
    INSERT INTO users (email, email_normalized, password_hash, email_verified)
    VALUES (${input.email.trim()}, ${normalizeEmail(input.email)}, ${input.passwordHash},
            ${input.emailVerified ?? false})
    ON CONFLICT (email_normalized) DO NOTHING
    RETURNING ${columns}`);
}

export async function setPasswordHash(
  db: CommonQueryMethods,
  userId: string,
  hash: string,
  tokensValidAfter: Date | null,
): Promise<void> {
  await db.query(sql.unsafe`
    UPDATE users SET password_hash = ${hash}, updated_at = now(),
      tokens_valid_after = COALESCE(${tokensValidAfter ? sql.timestamp(tokensValidAfter) : null}, tokens_valid_after)
    WHERE id = ${userId}`);
}

export async function markEmailVerified(db: CommonQueryMethods, userId: string): Promise<void> {
  await db.query(sql.unsafe`
    UPDATE users SET email_verified = true, updated_at = now() WHERE id = ${userId}`);
}
