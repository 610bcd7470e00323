import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";
import { type AuditEventInput, auditEventColumns, auditEventValues } from "./audit.js";
import { membershipRow } from "./memberships.js";
import {
  type GrantOfSession,
  liveBrowserSession,
  type NewSession,
  sessionWithRefreshTokenCtes,
} from "./sessions.js";

export const oauthCodeRow = z.object({
  workspace_id: z.string(),
  client_id: z.string(),
  parent_session_id: z.string(),
  user_id: z.string(),
  redirect_uri: z.string(),
  scopes: z.array(z.string()),
  nonce: z.string().nullable(),
  code_challenge: z.string(),
  created_at: z.number(),
  expires_at: z.number(),
  used_at: z.number().nullable(),
  grant_session_id: z.string().nullable(),
  resources: z.array(z.string()),
});
export type OAuthCodeRow = z.infer<typeof oauthCodeRow>;

export async function insertOAuthCode(
  db: CommonQueryMethods,
  input: {
    codeHash: Buffer;
    workspaceId: string;
    clientId: string;
    parentSessionId: string;
    userId: string;
    redirectUri: string;
    scopes: readonly string[];
    nonce: string | null;
    codeChallenge: string;
    resources: readonly string[];
    now: Date;
    expiresAt: Date;
  },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    INSERT INTO oauth_codes (code_hash, workspace_id, client_id, parent_session_id, user_id,
                             redirect_uri, scopes, nonce, code_challenge, created_at, expires_at,
                             resources)
    VALUES (${sql.binary(input.codeHash)}, ${input.workspaceId}, ${input.clientId},
            ${input.parentSessionId}, ${input.userId}, ${input.redirectUri},
            ${sql.array([...input.scopes], "text")}, ${input.nonce}, ${input.codeChallenge},
            ${sql.timestamp(input.now)}, ${sql.timestamp(input.expiresAt)},
            ${sql.array([...input.resources], "text")})`);
}

export const oauthCodeExchangeRow = oauthCodeRow.extend({
  /** The browser session the code hangs from, when it is still live (findLiveBrowserSession). */
  parent_id: z.string().nullable(),
  parent_auth_time: z.number().nullable(),
  parent_amr: z.array(z.string()).nullable(),
  /** The workspace's settings; null when the workspace is gone. */
  workspace_settings: z.record(z.string(), z.unknown()).nullable(),
  /** The user's address, for the ID token's email claims. */
  user_email: z.string().nullable(),
  user_email_verified: z.boolean().nullable(),
});
export type OAuthCodeExchangeRow = z.infer<typeof oauthCodeExchangeRow>;

/**
 * The code, locked (concurrent exchanges of one code run one after the other), with what its
 * exchange goes on to read, in one round trip: the live browser session it hangs from, the
 * workspace's settings and the user's address. Only the code is locked; the rest is read as
 * of the statement.
 */
export async function lockOAuthCodeForExchange(
  db: CommonQueryMethods,
  input: { workspaceId: string; codeHash: Buffer; now: Date },
): Promise<OAuthCodeExchangeRow | null> {
  return db.maybeOne(sql.type(oauthCodeExchangeRow)`
    SELECT c.workspace_id, c.client_id, c.parent_session_id, c.user_id, c.redirect_uri,
           c.scopes, c.nonce, c.code_challenge, c.created_at, c.expires_at, c.used_at,
           c.grant_session_id, c.resources,
           p.id AS parent_id, p.auth_time AS parent_auth_time, p.amr AS parent_amr,
           w.settings AS workspace_settings,
           a.email AS user_email, a.email_verified AS user_email_verified
    FROM oauth_codes c
    LEFT JOIN LATERAL (${liveBrowserSession({
      workspaceId: input.workspaceId,
      sessionId: sql.identifier(["c", "parent_session_id"]),
      now: input.now,
    })}) p ON true
    LEFT JOIN workspaces w ON w.id = c.workspace_id
    LEFT JOIN users a ON a.id = c.user_id
    WHERE c.workspace_id = ${input.workspaceId} AND c.code_hash = ${sql.binary(input.codeHash)}
    FOR UPDATE OF c`);
}

const spentCodeRow = membershipRow.pick({ role: true, status: true }).extend({
  session_id: z.string().nullable(),
});

/**
 * Spends a code on its grant in one statement. The membership is share-locked first (as
 * lockMembershipForSession does: a demotion or removal racing this waits for the
 * transaction, or was seen); only when it is active, and the code is the workspace's and
 * unspent, are the grant's session (insertSession) and its first refresh token
 * (insertRefreshToken) written, the code marked used with that session, and `audit` written
 * naming it. Answers the membership's role and status and the new session's id (null:
 * nothing was written), or null when there is no membership.
 */
export async function spendOAuthCode(
  db: CommonQueryMethods,
  input: {
    codeHash: Buffer;
    codeUsedAt: Date;
    session: NewSession & { grant: GrantOfSession };
    refreshTokenHash: Buffer;
    audit: Omit<AuditEventInput, "sessionId">;
  },
): Promise<z.infer<typeof spentCodeRow> | null> {
  const s = input.session;
  return db.maybeOne(sql.type(spentCodeRow)`
    WITH m AS (
      SELECT role, status FROM workspace_members
      WHERE workspace_id = ${s.workspaceId} AND user_id = ${s.userId}
      FOR SHARE
    ), ${sessionWithRefreshTokenCtes(
      s,
      input.refreshTokenHash,
      sql.fragment`m WHERE m.status = 'active' AND EXISTS (
        SELECT 1 FROM oauth_codes
        WHERE workspace_id = ${s.workspaceId} AND code_hash = ${sql.binary(input.codeHash)}
          AND used_at IS NULL)`,
    )}, c AS (
      UPDATE oauth_codes SET used_at = ${sql.timestamp(input.codeUsedAt)}, grant_session_id = s.id
      FROM s
      WHERE oauth_codes.workspace_id = ${s.workspaceId}
        AND oauth_codes.code_hash = ${sql.binary(input.codeHash)}
    ), a AS (
      INSERT INTO audit_events (${auditEventColumns})
      SELECT ${auditEventValues(input.audit, sql.fragment`s.id`)} FROM s
    )
    SELECT m.role, m.status, (SELECT id FROM s) AS session_id FROM m`);
}

export async function markOAuthCodeUsed(
  db: CommonQueryMethods,
  input: { workspaceId: string; codeHash: Buffer; grantSessionId: string | null; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE oauth_codes SET used_at = ${sql.timestamp(input.now)},
                           grant_session_id = ${input.grantSessionId}
    WHERE workspace_id = ${input.workspaceId} AND code_hash = ${sql.binary(input.codeHash)}`);
}

/** Deletes up to `limit` codes that expired before `before` (the sweep). */
export async function sweepExpiredOAuthCodes(
  db: CommonQueryMethods,
  input: { before: Date; limit: number },
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM oauth_codes WHERE code_hash IN (
      SELECT code_hash FROM oauth_codes WHERE expires_at < ${sql.timestamp(input.before)} LIMIT ${input.limit})`);
  return result.rowCount;
}
