import type { CommonQueryMethods, FragmentSqlToken } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";
import { type AuditEventInput, auditEventColumns, auditEventValues } from "./audit.js";
import { membershipRow } from "./memberships.js";
import { type SpentChallenge, spentChallengeInsert } from "./passkey-challenges.js";
import { type NewSession, sessionWithRefreshTokenCtes } from "./sessions.js";

const idRow = z.object({ id: z.string() });
const sessionIdRow = z.object({ session_id: z.string().nullable() });

/** A membership's WebAuthn credential (migration 023). */
export const passkeyRow = z.object({
  id: z.string(),
  workspace_id: z.string(),
  user_id: z.string(),
  credential_id: z.instanceof(Buffer),
  public_key: z.instanceof(Buffer),
  sign_count: z.coerce.number(),
  transports: z.array(z.string()),
  backed_up: z.boolean(),
  device_type: z.string(),
  name: z.string(),
  created_at: z.number(),
  last_used_at: z.number().nullable(),
});
export type PasskeyRow = z.infer<typeof passkeyRow>;

const columns = sql.fragment`id, workspace_id, user_id, credential_id, public_key, sign_count,
  transports, backed_up, device_type, name, created_at, last_used_at`;

export async function listPasskeys(
  db: CommonQueryMethods,
  workspaceId: string,
  userId: string,
): Promise<readonly PasskeyRow[]> {
  return db.any(sql.type(passkeyRow)`
    SELECT ${columns} FROM passkeys
    WHERE workspace_id = ${workspaceId} AND user_id = ${userId}
    ORDER BY created_at, id`);
}

/** A credential as an assertion is judged against it: with its member and account. */
const assertionTargetRow = passkeyRow.extend({
  /** The member's passkey user handle: what a username-less assertion must claim. */
  user_handle: z.instanceof(Buffer).nullable(),
  member_role: membershipRow.shape.role,
  member_status: membershipRow.shape.status,
  member_email_verified: z.boolean(),
  user_email: z.string(),
  user_email_verified: z.boolean(),
  user_blocked: z.boolean(),
  user_otp_login_opt_in: z.boolean(),
  /** The challenge this statement spent was unspent until then. */
  fresh: z.boolean(),
});
export type AssertionTarget = z.infer<typeof assertionTargetRow>;

/**
 * Spends an answer's challenge (spendPasskeyChallenge's row) and reads the credential of this
 * workspace with that id, with its member (share-locked, as lockMembershipForSession does, so
 * that a removal or demotion racing the sign-in waits for it or was seen) and its account, in
 * one statement. Another workspace's credential is never found; the challenge is spent
 * whether or not one is. `fresh` says whether this statement spent it.
 */
export async function spendChallengeForAssertion(
  db: CommonQueryMethods,
  input: { workspaceId: string; credentialId: Buffer; challenge: SpentChallenge },
): Promise<AssertionTarget | null> {
  return db.maybeOne(sql.type(assertionTargetRow)`
    WITH spent AS (${spentChallengeInsert(input.challenge)})
    SELECT p.id, p.workspace_id, p.user_id, p.credential_id, p.public_key, p.sign_count,
           p.transports, p.backed_up, p.device_type, p.name, p.created_at, p.last_used_at,
           m.passkey_user_handle AS user_handle, m.role AS member_role,
           m.status AS member_status, m.email_verified AS member_email_verified,
           u.email AS user_email, u.email_verified AS user_email_verified,
           u.blocked AS user_blocked, u.otp_login_opt_in AS user_otp_login_opt_in,
           EXISTS (SELECT 1 FROM spent) AS fresh
    FROM passkeys p
    JOIN workspace_members m ON m.workspace_id = p.workspace_id AND m.user_id = p.user_id
    JOIN users u ON u.id = p.user_id
    WHERE p.workspace_id = ${input.workspaceId}
      AND p.credential_id = ${sql.binary(input.credentialId)}
    FOR SHARE OF m`);
}

/** The credential of this workspace with that id; another workspace's is never found. */
export async function findPasskeyByCredentialId(
  db: CommonQueryMethods,
  workspaceId: string,
  credentialId: Buffer,
): Promise<PasskeyRow | null> {
  return db.maybeOne(sql.type(passkeyRow)`
    SELECT ${columns} FROM passkeys
    WHERE workspace_id = ${workspaceId} AND credential_id = ${sql.binary(credentialId)}`);
}

/** Inserts a credential; null when the workspace already holds one with its id. */
export async function insertPasskey(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string;
    credentialId: Buffer;
    publicKey: Buffer;
    signCount: number;
    transports: readonly string[];
    backedUp: boolean;
    deviceType: string;
    name: string;
    now: Date;
  },
): Promise<PasskeyRow | null> {
  return db.maybeOne(sql.type(passkeyRow)`
    INSERT INTO passkeys (workspace_id, user_id, credential_id, public_key, sign_count, transports,
                          backed_up, device_type, name, created_at)
    VALUES (${input.workspaceId}, ${input.userId}, ${sql.binary(input.credentialId)},
            ${sql.binary(input.publicKey)}, ${input.signCount},
            ${sql.array([...input.transports], "text")}, ${input.backedUp}, ${input.deviceType},
            ${input.name}, ${sql.timestamp(input.now)})
    ON CONFLICT ON CONSTRAINT passkeys_credential_id_key DO NOTHING
    RETURNING ${columns}`);
}

/** A successful assertion: the counter it moves from and to, and what it says of backup. */
export interface PasskeyUse {
  readonly workspaceId: string;
  readonly id: string;
  readonly previousCount: number;
  readonly signCount: number;
  readonly backedUp: boolean;
  readonly now: Date;
}

/**
 * The UPDATE that records a use, answering the passkey's id. The counter only moves forward:
 * of two assertions that raced with the same counter, the second finds no row.
 */
function passkeyUseUpdate(u: PasskeyUse): FragmentSqlToken {
  return sql.fragment`
    UPDATE passkeys SET sign_count = ${u.signCount}, backed_up = ${u.backedUp},
                        last_used_at = ${sql.timestamp(u.now)}
    WHERE workspace_id = ${u.workspaceId} AND id = ${u.id} AND sign_count = ${u.previousCount}
    RETURNING id`;
}

/** Records a successful assertion (passkeyUseUpdate); false when the counter did not move. */
export async function recordPasskeyUse(db: CommonQueryMethods, use: PasskeyUse): Promise<boolean> {
  const row = await db.maybeOne(sql.type(idRow)`${passkeyUseUpdate(use)}`);
  return row !== null;
}

/**
 * A username-less sign-in's writes, in one statement: the counter moved forward as
 * recordPasskeyUse does, and only when it moved, the session with its first refresh token
 * (sessionWithRefreshTokenCtes), `audit` naming the session, and the account's failed-login
 * count cleared (a success clears it, Lockout.clear). Answers the session's id; null when
 * another assertion moved the counter first or the credential is gone (nothing written).
 */
export async function recordPasskeySignIn(
  db: CommonQueryMethods,
  input: {
    use: PasskeyUse;
    session: NewSession;
    refreshTokenHash: Buffer;
    audit: Omit<AuditEventInput, "sessionId">;
    lockoutSubject: string;
  },
): Promise<string | null> {
  return db.oneFirst(sql.type(sessionIdRow)`
    WITH k AS (${passkeyUseUpdate(input.use)}), ${sessionWithRefreshTokenCtes(input.session, input.refreshTokenHash, sql.fragment`k`)},
    a AS (
      INSERT INTO audit_events (${auditEventColumns})
      SELECT ${auditEventValues(input.audit, sql.fragment`s.id`)} FROM s
    ), f AS (
      DELETE FROM login_failures
      WHERE email_normalized = ${input.lockoutSubject} AND EXISTS (SELECT 1 FROM s)
    )
    SELECT (SELECT id FROM s) AS session_id`);
}

export async function renamePasskey(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; id: string; name: string },
): Promise<PasskeyRow | null> {
  return db.maybeOne(sql.type(passkeyRow)`
    UPDATE passkeys SET name = ${input.name}
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId} AND id = ${input.id}
    RETURNING ${columns}`);
}

export async function deletePasskey(
  db: CommonQueryMethods,
  input: { workspaceId: string; userId: string; id: string },
): Promise<PasskeyRow | null> {
  return db.maybeOne(sql.type(passkeyRow)`
    DELETE FROM passkeys
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId} AND id = ${input.id}
    RETURNING ${columns}`);
}
