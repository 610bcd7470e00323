import type { CommonQueryMethods, FragmentSqlToken, ValueExpression } from "slonik";
import { z } from "zod";
import { joined, sql, voidRow } from "../db/sql.js";
import { membershipRow } from "./memberships.js";
import { endPendingLoginsWith } from "./pending-logins.js";
import { userRow } from "./users.js";
import { workspaceRow } from "./workspaces.js";

const idRow = z.object({ id: z.string() });
const refreshAccessRow = z.object({
  blocked: z.boolean(),
  role: z.enum(["owner", "admin", "member"]).nullable(),
  status: z.string().nullable(),
  settings: z.record(z.string(), z.unknown()),
});
const sessionAccessRow = z.object({
  revoked_at: z.number().nullable(),
  expires_at: z.number(),
  blocked: z.boolean(),
  status: z.string().nullable(),
  role: z.string().nullable(),
});

export const sessionRow = z.object({
  id: z.string(),
  workspace_id: z.string(),
  user_id: z.string(),
  ip_address: z.string().nullable(),
  user_agent: z.string().nullable(),
  created_at: z.number(),
  last_used_at: z.number(),
  idle_expires_at: z.number(),
  expires_at: z.number(),
  revoked_at: z.number().nullable(),
  revoke_reason: z.string().nullable(),
  amr: z.array(z.string()),
  /** A grant of the OpenID Provider: its client, and the browser session it came from. */
  client_id: z.string().nullable(),
  parent_session_id: z.string().nullable(),
  scopes: z.array(z.string()).nullable(),
  /** When the user last proved who they are, when that is not created_at (a grant). */
  auth_time: z.number().nullable(),
  /** A grant's RFC 8707 resources: its access tokens' audience (null or empty: the provider). */
  resources: z.array(z.string()).nullable(),
});
export type SessionRow = z.infer<typeof sessionRow>;

const sessionColumns = sql.fragment`id, workspace_id, user_id, ip_address, user_agent, created_at,
  last_used_at, idle_expires_at, expires_at, revoked_at, revoke_reason, amr, client_id,
  parent_session_id, scopes, auth_time, resources`;

/** What makes a session a grant of the OpenID Provider. */
export interface GrantOfSession {
  readonly clientId: string;
  readonly parentSessionId: string;
  readonly scopes: readonly string[];
  readonly authTime: Date;
  readonly resources: readonly string[];
}

/** What a new session row holds (insertSession, and a spent code's grant in oauth-codes.ts). */
export interface NewSession {
  workspaceId: string;
  userId: string;
  ipAddress: string | null;
  userAgent: string | null;
  now: Date;
  idleExpiresAt: Date;
  expiresAt: Date;
  accessExpiresAt: Date;
  amr: readonly string[];
  /** For a grant of the OpenID Provider. */
  grant?: GrantOfSession;
}

export async function insertSession(
  db: CommonQueryMethods,
  input: NewSession,
): Promise<SessionRow> {
  const grant = input.grant;
  return db.one(sql.type(sessionRow)`
    INSERT INTO sessions (workspace_id, user_id, ip_address, user_agent, created_at, last_used_at,
                          idle_expires_at, expires_at, access_expires_at, amr, client_id,
                          parent_session_id, scopes, auth_time, resources)
    VALUES (${input.workspaceId}, ${input.userId}, ${input.ipAddress}, ${input.userAgent},
            ${sql.timestamp(input.now)}, ${sql.timestamp(input.now)},
            ${sql.timestamp(input.idleExpiresAt)}, ${sql.timestamp(input.expiresAt)},
            ${sql.timestamp(input.accessExpiresAt)}, ${sql.array([...input.amr], "text")},
            ${grant?.clientId ?? null}, ${grant?.parentSessionId ?? null},
            ${grant ? sql.array([...grant.scopes], "text") : null},
            ${grant ? sql.timestamp(grant.authTime) : null},
            ${grant ? sql.array([...grant.resources], "text") : null})
    RETURNING ${sessionColumns}`);
}

/**
 * A session and its first refresh token, as two CTEs (`s`, answering the session's id, and
 * `r`) of a statement that writes them beside what opens them: one row of each for every row
 * of `from` (a FROM list with its WHERE, of that statement's other CTEs), none when it has none.
 * The same rows insertSession and insertRefreshToken write.
 */
export function sessionWithRefreshTokenCtes(
  s: NewSession,
  refreshTokenHash: Buffer,
  from: FragmentSqlToken,
): FragmentSqlToken {
  const now = sql.timestamp(s.now);
  const grant = s.grant;
  return sql.fragment`s AS (
      INSERT INTO sessions (workspace_id, user_id, ip_address, user_agent, created_at,
                            last_used_at, idle_expires_at, expires_at, access_expires_at, amr,
                            client_id, parent_session_id, scopes, auth_time, resources)
      SELECT ${s.workspaceId}::uuid, ${s.userId}::uuid, ${s.ipAddress}::text,
             ${s.userAgent}::text, ${now}, ${now}, ${sql.timestamp(s.idleExpiresAt)},
             ${sql.timestamp(s.expiresAt)}, ${sql.timestamp(s.accessExpiresAt)},
             ${sql.array([...s.amr], "text")}, ${grant?.clientId ?? null}::text,
             ${grant?.parentSessionId ?? null}::uuid,
             ${grant ? sql.array([...grant.scopes], "text") : null}::text[],
             ${grant ? sql.timestamp(grant.authTime) : null}::timestamptz,
             ${grant ? sql.array([...grant.resources], "text") : null}::text[]
      FROM ${from}
      RETURNING id
    ), r AS (
      INSERT INTO refresh_tokens (workspace_id, session_id, token_hash, parent_id, created_at)
      SELECT ${s.workspaceId}::uuid, s.id, ${sql.binary(refreshTokenHash)}::bytea, NULL, ${now}
      FROM s
    )`;
}

export async function findSession(
  db: CommonQueryMethods,
  workspaceId: string,
  sessionId: string,
): Promise<SessionRow | null> {
  return db.maybeOne(sql.type(sessionRow)`
    SELECT ${sessionColumns} FROM sessions WHERE workspace_id = ${workspaceId} AND id = ${sessionId}`);
}

/** The session, locked for the rest of the transaction (refreshes of it queue behind). */
export async function lockSession(
  db: CommonQueryMethods,
  workspaceId: string,
  sessionId: string,
): Promise<SessionRow | null> {
  return db.maybeOne(sql.type(sessionRow)`
    SELECT ${sessionColumns} FROM sessions
    WHERE workspace_id = ${workspaceId} AND id = ${sessionId} FOR UPDATE`);
}

/**
 * What a refresh must know besides the session, in one query: whether the user is blocked,
 * the membership's role and status, and the workspace's settings.
 */
export async function refreshAccess(db: CommonQueryMethods, workspaceId: string, userId: string) {
  return db.maybeOne(sql.type(refreshAccessRow)`
    SELECT u.blocked, m.role, m.status, w.settings
    FROM users u
    JOIN workspaces w ON w.id = ${workspaceId}
    LEFT JOIN workspace_members m ON m.workspace_id = w.id AND m.user_id = u.id
    WHERE u.id = ${userId}`);
}

/**
 * What an access token's call must know of its session, user and membership, in one
 * statement: whether the session is revoked or expired, the user blocked, and the membership's
 * status and role.
 */
export async function findSessionAccess(
  db: CommonQueryMethods,
  input: { workspaceId: string; sessionId: string; userId: string },
): Promise<z.infer<typeof sessionAccessRow> | null> {
  return db.maybeOne(sql.type(sessionAccessRow)`
    SELECT s.revoked_at, s.expires_at, u.blocked, m.status, m.role
    FROM sessions s
    JOIN users u ON u.id = s.user_id
    LEFT JOIN workspace_members m ON m.workspace_id = s.workspace_id AND m.user_id = s.user_id
    WHERE s.workspace_id = ${input.workspaceId} AND s.id = ${input.sessionId} AND s.user_id = ${input.userId}`);
}

const sessionView = joined({
  session: { alias: "s", row: sessionRow },
  user: { alias: "u", row: userRow },
  workspace: { alias: "w", row: workspaceRow },
  membership: { alias: "m", row: membershipRow },
});

/** The session with its user, workspace and membership, read in one query. */
export async function findSessionView(
  db: CommonQueryMethods,
  input: { workspaceId: string; sessionId: string; userId: string },
): Promise<z.output<typeof sessionView.row> | null> {
  return db.maybeOne(sql.type(sessionView.row)`
    SELECT ${sessionView.columns}
    FROM sessions s
    JOIN users u ON u.id = s.user_id
    JOIN workspaces w ON w.id = s.workspace_id
    JOIN workspace_members m ON m.workspace_id = s.workspace_id AND m.user_id = s.user_id
    WHERE s.workspace_id = ${input.workspaceId} AND s.id = ${input.sessionId}
      AND s.user_id = ${input.userId}`);
}

/** The user's sessions in the workspace that are neither revoked nor expired, newest first. */
export async function listLiveSessions(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string;
    now: Date;
    before: { createdAt: number; id: string } | null;
    limit: number;
  },
): Promise<readonly SessionRow[]> {
  const now = sql.timestamp(input.now);
  return db.any(sql.type(sessionRow)`
    SELECT ${sessionColumns} FROM sessions
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}
      AND revoked_at IS NULL AND expires_at > ${now} AND idle_expires_at > ${now}
      AND (${input.before === null}
           OR (created_at, id) < (${input.before ? sql.timestamp(new Date(input.before.createdAt)) : null}::timestamptz,
                                  ${input.before?.id ?? null}::uuid))
    ORDER BY created_at DESC, id DESC
    LIMIT ${input.limit}`);
}

/** Records a refresh: the session's new idle deadline and the latest access-token expiry. */
export async function touchSession(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    sessionId: string;
    now: Date;
    idleExpiresAt: Date;
    accessExpiresAt: Date;
  },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE sessions SET last_used_at = ${sql.timestamp(input.now)},
      idle_expires_at = ${sql.timestamp(input.idleExpiresAt)},
      access_expires_at = greatest(access_expires_at, ${sql.timestamp(input.accessExpiresAt)})
    WHERE workspace_id = ${input.workspaceId} AND id = ${input.sessionId}`);
}

/** Revokes one live session; answers whether it was live. */
export async function revokeSession(
  db: CommonQueryMethods,
  input: { workspaceId: string; sessionId: string; userId?: string; reason: string; now: Date },
): Promise<boolean> {
  const result = await db.query(sql.type(voidRow)`
    UPDATE sessions SET revoked_at = ${sql.timestamp(input.now)}, revoke_reason = ${input.reason}
    WHERE workspace_id = ${input.workspaceId} AND id = ${input.sessionId} AND revoked_at IS NULL
      AND (${input.userId ?? null}::uuid IS NULL OR user_id = ${input.userId ?? null}::uuid)`);
  return result.rowCount > 0;
}

/**
 * Ends a user's live sessions, and the pending logins that would open new ones: in one
 * workspace, or in all of them when `workspaceId` is null, but for `exceptSessionId` (the
 * caller's own). With `clientId`, only the user's grants to that OAuth client end, and no
 * pending login: those open sessions of Keygate's own, never grants. The one way a session is
 * revoked for its user; answers the ids ended.
 */
export async function revokeSessions(
  db: CommonQueryMethods,
  input: {
    userId: string;
    workspaceId: string | null;
    reason: string;
    now: Date;
    exceptSessionId?: string | null;
    clientId?: string;
  },
): Promise<readonly string[]> {
  const except = input.exceptSessionId ?? null;
  const clientId = input.clientId ?? null;
  const pending =
    clientId === null ? sql.fragment`WITH ${endPendingLoginsWith(input)}` : sql.fragment``;
  return db.anyFirst(sql.type(idRow)`
    ${pending}
    UPDATE sessions SET revoked_at = ${sql.timestamp(input.now)}, revoke_reason = ${input.reason}
    WHERE user_id = ${input.userId} AND revoked_at IS NULL
      AND (${input.workspaceId}::uuid IS NULL OR workspace_id = ${input.workspaceId}::uuid)
      AND (${except}::uuid IS NULL OR id <> ${except}::uuid)
      AND (${clientId}::text IS NULL OR client_id = ${clientId}::text)
    RETURNING id`);
}

/**
 * Deletes up to `limit` sessions that ended (revoked or expired) before `before`, their
 * refresh tokens by cascade; answers how many.
 */
export async function sweepEndedSessions(
  db: CommonQueryMethods,
  input: { before: Date; limit: number },
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM sessions WHERE id IN (
      SELECT id FROM sessions
      WHERE least(coalesce(revoked_at, 'infinity'), expires_at, idle_expires_at) < ${sql.timestamp(input.before)}
      LIMIT ${input.limit})`);
  return result.rowCount;
}

export const refreshTokenRow = z.object({
  id: z.string(),
  workspace_id: z.string(),
  session_id: z.string(),
  parent_id: z.string().nullable(),
  created_at: z.number(),
  rotated_at: z.number().nullable(),
});
export type RefreshTokenRow = z.infer<typeof refreshTokenRow>;

const tokenColumns = sql.fragment`id, workspace_id, session_id, parent_id, created_at, rotated_at`;

export async function insertRefreshToken(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    sessionId: string;
    hash: Buffer;
    parentId: string | null;
    now: Date;
  },
): Promise<RefreshTokenRow> {
  return db.one(sql.type(refreshTokenRow)`
    INSERT INTO refresh_tokens (workspace_id, session_id, token_hash, parent_id, created_at)
    VALUES (${input.workspaceId}, ${input.sessionId}, ${sql.binary(input.hash)}, ${input.parentId},
            ${sql.timestamp(input.now)})
    RETURNING ${tokenColumns}`);
}

/**
 * The token with this hash, locked for the rest of the transaction so that concurrent
 * refreshes with one token run one after the other. Not tenant-scoped: the token itself says
 * which workspace it belongs to, and callers scope everything after this by that workspace.
 */
export async function lockRefreshTokenByHash(
  db: CommonQueryMethods,
  hash: Buffer,
): Promise<RefreshTokenRow | null> {
  return db.maybeOne(sql.type(refreshTokenRow)`
    SELECT ${tokenColumns} FROM refresh_tokens WHERE token_hash = ${sql.binary(hash)} FOR UPDATE`);
}

export async function findRefreshTokenChild(
  db: CommonQueryMethods,
  workspaceId: string,
  parentId: string,
): Promise<RefreshTokenRow | null> {
  return db.maybeOne(sql.type(refreshTokenRow)`
    SELECT ${tokenColumns} FROM refresh_tokens WHERE workspace_id = ${workspaceId} AND parent_id = ${parentId}`);
}

export async function markRefreshTokenRotated(
  db: CommonQueryMethods,
  input: { workspaceId: string; id: string; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE refresh_tokens SET rotated_at = ${sql.timestamp(input.now)}
    WHERE workspace_id = ${input.workspaceId} AND id = ${input.id}`);
}

const browserSessionRow = z.object({
  id: z.string(),
  user_id: z.string(),
  auth_time: z.number(),
  amr: z.array(z.string()),
});
export type BrowserSessionRow = z.infer<typeof browserSessionRow>;

/**
 * A session a browser may sign in to an OAuth client with: live, not itself a grant, of an
 * unblocked user with an active membership. Answers when its user last proved who they are.
 */
export async function findLiveBrowserSession(
  db: CommonQueryMethods,
  input: { workspaceId: string; sessionId: string; now: Date },
): Promise<BrowserSessionRow | null> {
  return db.maybeOne(sql.type(browserSessionRow)`${liveBrowserSession(input)}`);
}

/**
 * The query of findLiveBrowserSession, for a statement that reads it beside other rows;
 * `sessionId` may be a column of that statement (such as a code's parent_session_id).
 */
export function liveBrowserSession(input: {
  workspaceId: string;
  sessionId: ValueExpression;
  now: Date;
}): FragmentSqlToken {
  const now = sql.timestamp(input.now);
  return sql.fragment`
    SELECT s.id, s.user_id, coalesce(s.auth_time, s.created_at) AS auth_time, s.amr
    FROM sessions s
    JOIN users u ON u.id = s.user_id
    JOIN workspace_members m ON m.workspace_id = s.workspace_id AND m.user_id = s.user_id
    WHERE s.workspace_id = ${input.workspaceId} AND s.id = ${input.sessionId}
      AND s.revoked_at IS NULL AND s.client_id IS NULL
      AND s.expires_at > ${now} AND s.idle_expires_at > ${now}
      AND NOT u.blocked AND m.status = 'active'`;
}

const tokenSessionRow = z.object({ workspace_id: z.string(), session_id: z.string() });

/**
 * The workspace and session of the refresh token with this hash, rotated or not. Not
 * tenant-scoped, like lockRefreshTokenByHash: the token says which workspace it is in.
 */
export async function findRefreshTokenSession(
  db: CommonQueryMethods,
  hash: Buffer,
): Promise<z.infer<typeof tokenSessionRow> | null> {
  return db.maybeOne(sql.type(tokenSessionRow)`
    SELECT workspace_id, session_id FROM refresh_tokens WHERE token_hash = ${sql.binary(hash)}`);
}

const refreshTokenStateRow = z.object({
  id: z.string(),
  created_at: z.number(),
  rotated_at: z.number().nullable(),
  session_id: z.string(),
  workspace_id: z.string(),
  user_id: z.string(),
  revoked_at: z.number().nullable(),
  expires_at: z.number(),
  idle_expires_at: z.number(),
  blocked: z.boolean(),
  status: z.string().nullable(),
  role: z.string().nullable(),
  amr: z.array(z.string()),
  client_id: z.string().nullable(),
});

/**
 * The refresh token with this hash and what decides whether it is active, in one query: its
 * session, its user's block and its membership. Looked up across workspaces, like
 * lockRefreshTokenByHash.
 */
export async function findRefreshTokenState(
  db: CommonQueryMethods,
  hash: Buffer,
): Promise<z.infer<typeof refreshTokenStateRow> | null> {
  return db.maybeOne(sql.type(refreshTokenStateRow)`
    SELECT t.id, t.created_at, t.rotated_at, s.id AS session_id, s.workspace_id, s.user_id,
           s.revoked_at, s.expires_at, s.idle_expires_at, s.amr, u.blocked, m.status, m.role,
           s.client_id
    FROM refresh_tokens t
    JOIN sessions s ON s.workspace_id = t.workspace_id AND s.id = t.session_id
    JOIN users u ON u.id = s.user_id
    LEFT JOIN workspace_members m ON m.workspace_id = s.workspace_id AND m.user_id = s.user_id
    WHERE t.token_hash = ${sql.binary(hash)}`);
}
