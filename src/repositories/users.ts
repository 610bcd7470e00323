import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";
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
  /** When the current password was tied to the mailbox (migration 020); null: never. */
  password_proven_at: z.number().nullable(),
  created_at: z.number(),
  updated_at: z.number(),
});
export type UserRow = z.infer<typeof userRow>;
const userWithMemberRoleRow = userRow.extend({ member_role: z.enum(roles).nullable() });

const columns = sql.fragment`id, email, email_normalized, password_hash, email_verified, blocked,
  metadata, tokens_valid_after, otp_login_opt_in, password_proven_at, created_at, updated_at`;

/**
 * The form of an address that mail goes to: trimmed and NFKC, so that a look-alike spelling
 * (fullwidth letters) is stored as the address it stands for (migration 020).
 */
export function deliveryAddress(email: string): string {
  return email.trim().normalize("NFKC");
}

/** The form of an address that uniqueness and lookups use: trimmed, NFKC, lower case. */
export function normalizeEmail(email: string): string {
  return deliveryAddress(email).toLowerCase();
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
  const row = await db.maybeOne(sql.type(userWithMemberRoleRow)`
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
    VALUES (${deliveryAddress(input.email)}, ${normalizeEmail(input.email)}, ${input.passwordHash},
            ${input.emailVerified ?? false})
    ON CONFLICT (email_normalized) DO NOTHING
    RETURNING ${columns}`);
}

/**
 * Sets the password; `proven` when whoever set it also showed they read the mailbox
 * (AcceptInvitation, ResetPassword), which password_proven_at records. Any other change keeps
 * the record as it was.
 */
export async function setPasswordHash(
  db: CommonQueryMethods,
  userId: string,
  hash: string,
  tokensValidAfter: Date | null,
  proven: Date | null = null,
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE users SET password_hash = ${hash}, updated_at = now(),
      password_proven_at = COALESCE(${proven ? sql.timestamp(proven) : null}, password_proven_at),
      tokens_valid_after = COALESCE(${tokensValidAfter ? sql.timestamp(tokensValidAfter) : null}, tokens_valid_after)
    WHERE id = ${userId}`);
}

/** A deployment admin vouches for the account as it is: its address and its password. */
export async function vouchForAccount(
  db: CommonQueryMethods,
  userId: string,
  now: Date,
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE users SET email_verified = true, updated_at = now(),
      password_proven_at = CASE WHEN password_hash IS NULL THEN password_proven_at
                                ELSE COALESCE(password_proven_at, ${sql.timestamp(now)}) END
    WHERE id = ${userId}`);
}

export async function markEmailVerified(db: CommonQueryMethods, userId: string): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE users SET email_verified = true, updated_at = now() WHERE id = ${userId}`);
}

/** The account's own choice of the emailed second step (where a workspace makes it optional). */
export async function setEmailCodeSecondStep(
  db: CommonQueryMethods,
  userId: string,
  on: boolean,
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE users SET otp_login_opt_in = ${on}, updated_at = now() WHERE id = ${userId}`);
}
