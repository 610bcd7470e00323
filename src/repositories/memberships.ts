import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";
import { workspaceRow } from "./workspaces.js";

const passkeyUserHandleRow = z.object({ passkey_user_handle: z.instanceof(Buffer) });
const userIdRow = z.object({ user_id: z.string() });
const memberRow = z.object({ member: z.boolean() });

export const roles = ["owner", "admin", "member"] as const;
export type Role = (typeof roles)[number];

export const membershipRow = z.object({
  workspace_id: z.string(),
  user_id: z.string(),
  role: z.enum(roles),
  /** `invited`: an existing account asked to join, which opens nothing until it accepts. */
  status: z.enum(["active", "disabled", "invited"]),
  /** The workspace vouches for the address (migration 020); for its own policy only. */
  email_verified: z.boolean(),
  /** This workspace added an account whose password was not proven (migration 020). */
  claimed_at: z.number().nullable(),
  /** The workspace's own object for the member (migration 021). */
  metadata: z.record(z.string(), z.unknown()),
  tokens_valid_after: z.number().nullable(),
  created_at: z.number(),
  updated_at: z.number(),
});
export type MembershipRow = z.infer<typeof membershipRow>;

export const membershipColumns = sql.fragment`workspace_id, user_id, role, status, email_verified,
  claimed_at, metadata, tokens_valid_after, created_at, updated_at`;
const columns = membershipColumns;

export async function findMembership(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<MembershipRow | null> {
  return db.maybeOne(sql.type(membershipRow)`
    SELECT ${columns} FROM workspace_members
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId}`);
}

/** Whether the user has a membership in the workspace, of any status. */
export async function isMember(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<boolean> {
  return db.oneFirst(sql.type(memberRow)`
    SELECT EXISTS (SELECT 1 FROM workspace_members
                   WHERE workspace_id = ${workspaceId} AND user_id = ${userId}) AS member`);
}

/**
 * The membership's role and status, share-locked for the rest of the transaction: a
 * concurrent change of it (a demotion, a removal) waits until this transaction ends, so what
 * a new session's token says is what holds when it is issued.
 */
export async function lockMembershipForSession(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<Pick<MembershipRow, "role" | "status"> | null> {
  return db.maybeOne(sql.type(membershipRow.pick({ role: true, status: true }))`
    SELECT role, status FROM workspace_members
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId}
    FOR SHARE`);
}

/**
 * Inserts the membership, or answers null when one exists (a concurrent insert of the same
 * pair waits for the other to commit, then answers null).
 */
export async function insertMembershipIfAbsent(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string;
    role: Role;
    emailVerified?: boolean;
    /** An invitation rather than a membership (default active). */
    invited?: boolean;
    metadata?: Record<string, unknown>;
  },
): Promise<MembershipRow | null> {
  return db.maybeOne(sql.type(membershipRow)`
    INSERT INTO workspace_members (workspace_id, user_id, role, email_verified, status, metadata)
    VALUES (${input.workspaceId}, ${input.userId}, ${input.role}, ${input.emailVerified ?? false},
            ${input.invited ? "invited" : "active"}, ${sql.jsonb((input.metadata ?? {}) as never)})
    ON CONFLICT (workspace_id, user_id) DO NOTHING
    RETURNING ${columns}`);
}

/** The invited account accepted: the membership is active from now on. */
export async function activateInvitedMembership(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE workspace_members SET status = 'active', updated_at = now()
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId} AND status = 'invited'`);
}

/** Replaces the workspace's own metadata object for its member. */
export async function setMembershipMetadata(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; metadata: Record<string, unknown> },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE workspace_members SET metadata = ${sql.jsonb(input.metadata as never)}, updated_at = now()
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}`);
}

/**
 * A membership added for an account that existed before and whose password is not proven
 * cannot be opened by that password until the owner proves the address (SECURITY.md 28).
 */
export function claimPending(
  membership: Pick<MembershipRow, "claimed_at">,
  user: { password_proven_at: number | null },
): boolean {
  if (membership.claimed_at === null) return false;
  return user.password_proven_at === null || user.password_proven_at <= membership.claimed_at;
}

/** Marks a new membership as a claim on an account whose password is not proven. */
export async function markClaimed(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE workspace_members SET claimed_at = ${sql.timestamp(input.now)}
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}`);
}

/** The workspace vouches for its member's address (for its own policy only). */
export async function vouchForMemberEmail(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE workspace_members SET email_verified = true, updated_at = now()
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId}`);
}

/** Adds the membership unless one exists; answers the row either way. */
export async function ensureMembership(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; role: Role },
): Promise<MembershipRow> {
  return (
    (await insertMembershipIfAbsent(db, input)) ??
    ((await findMembership(db, input.workspaceId, input.userId)) as MembershipRow)
  );
}

export const membershipWithWorkspaceRow = membershipRow.extend({
  workspace: workspaceRow,
});

/**
 * The user's active memberships across workspaces, with their workspaces, in a stable order
 * (workspace id), from the one after `afterWorkspaceId`. Not tenant-scoped: it is the user's
 * own list.
 */
export async function listActiveMembershipsOfUser(
  db: CommonQueryMethods,
  userId: string,
  afterWorkspaceId: string | null,
  limit: number,
) {
  return db.any(sql.type(membershipWithWorkspaceRow)`
    SELECT m.workspace_id, m.user_id, m.role, m.status, m.email_verified, m.claimed_at,
           m.metadata, m.tokens_valid_after,
           m.created_at, m.updated_at,
           json_build_object('id', w.id, 'name', w.name, 'slug', w.slug, 'settings', w.settings,
             'created_at', (extract(epoch FROM w.created_at) * 1000)::float8,
             'updated_at', (extract(epoch FROM w.updated_at) * 1000)::float8) AS workspace
    FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id
    WHERE m.user_id = ${userId} AND m.status = 'active'
      AND (${afterWorkspaceId}::uuid IS NULL OR m.workspace_id > ${afterWorkspaceId}::uuid)
    ORDER BY m.workspace_id
    LIMIT ${limit}`);
}

/**
 * The membership's WebAuthn user handle, made on first use from `candidate` (random bytes):
 * of concurrent first uses, every caller gets the one that was stored.
 */
export async function ensurePasskeyUserHandle(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
  candidate: Buffer,
): Promise<Buffer | null> {
  const row = await db.maybeOne(sql.type(passkeyUserHandleRow)`
    UPDATE workspace_members
    SET passkey_user_handle = COALESCE(passkey_user_handle, ${sql.binary(candidate)})
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId}
    RETURNING passkey_user_handle`);
  return row?.passkey_user_handle ?? null;
}

/**
 * Locks the membership for a change of its factors: a removal that must leave one factor
 * waits for any other change, so two concurrent removals cannot both take the last two.
 */
export async function lockMembershipForFactorChange(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<boolean> {
  const row = await db.maybeOne(sql.type(userIdRow)`
    SELECT user_id FROM workspace_members
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId}
    FOR NO KEY UPDATE`);
  return row !== null;
}
