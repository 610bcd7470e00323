import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/** What the client asked for at /oauth2/authorize, kept until the browser comes back. */
export const authorizationRequestParams = z.object({
  redirect_uri: z.string(),
  scopes: z.array(z.string()),
  state: z.string().nullable(),
  nonce: z.string().nullable(),
  code_challenge: z.string(),
  response_mode: z.enum(["query"]),
  /** Epoch ms: a sign-in before this does not do (prompt=login, max_age); null: any. */
  sign_in_after: z.number().nullable(),
  login_hint: z.string().nullable(),
  /** RFC 8707: what the access tokens are for; empty for the provider itself. */
  resources: z.array(z.string()).default([]),
  /** prompt=consent: ask even a first-party client's user, and whatever they consented to. */
  consent_prompted: z.boolean().default(false),
});
export type AuthorizationRequestParams = z.infer<typeof authorizationRequestParams>;

export const oauthInteractionRow = z.object({
  id: z.string(),
  workspace_id: z.string(),
  client_id: z.string(),
  request: authorizationRequestParams,
  browser_hash: z.instanceof(Buffer),
  session_id: z.string().nullable(),
  answer_hash: z.instanceof(Buffer).nullable(),
  outcome: z.enum(["accepted", "rejected"]).nullable(),
  created_at: z.number(),
  expires_at: z.number(),
  completed_at: z.number().nullable(),
});
export type OAuthInteractionRow = z.infer<typeof oauthInteractionRow>;

const columns = sql.fragment`id, workspace_id, client_id, request, browser_hash, session_id,
  answer_hash, outcome, created_at, expires_at, completed_at`;

export async function insertOAuthInteraction(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    clientId: string;
    request: AuthorizationRequestParams;
    browserHash: Buffer;
    now: Date;
    expiresAt: Date;
  },
): Promise<OAuthInteractionRow> {
  return db.one(sql.type(oauthInteractionRow)`
    INSERT INTO oauth_interactions (workspace_id, client_id, request, browser_hash, created_at,
                                    expires_at)
    VALUES (${input.workspaceId}, ${input.clientId}, ${sql.jsonb(input.request)},
            ${sql.binary(input.browserHash)}, ${sql.timestamp(input.now)},
            ${sql.timestamp(input.expiresAt)})
    RETURNING ${columns}`);
}

/** A live interaction (not expired, not completed), locked when `lock` is set. */
export async function findLiveOAuthInteraction(
  db: CommonQueryMethods,
  input: { workspaceId: string; id: string; now: Date; lock?: boolean },
): Promise<OAuthInteractionRow | null> {
  return db.maybeOne(sql.type(oauthInteractionRow)`
    SELECT ${columns} FROM oauth_interactions
    WHERE workspace_id = ${input.workspaceId} AND id = ${input.id}
      AND completed_at IS NULL AND expires_at > ${sql.timestamp(input.now)}
    ${input.lock ? sql.fragment`FOR UPDATE` : sql.fragment``}`);
}

/** Records the user's answer; only the first answer counts. */
export async function answerOAuthInteraction(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    id: string;
    outcome: "accepted" | "rejected";
    sessionId: string | null;
    answerHash: Buffer;
  },
): Promise<boolean> {
  const result = await db.query(sql.type(voidRow)`
    UPDATE oauth_interactions SET outcome = ${input.outcome}, session_id = ${input.sessionId},
                                  answer_hash = ${sql.binary(input.answerHash)}
    WHERE workspace_id = ${input.workspaceId} AND id = ${input.id}
      AND completed_at IS NULL AND outcome IS NULL`);
  return result.rowCount > 0;
}

/** The browser came back: the interaction is spent. */
export async function completeOAuthInteraction(
  db: CommonQueryMethods,
  input: { workspaceId: string; id: string; now: Date },
): Promise<boolean> {
  const result = await db.query(sql.type(voidRow)`
    UPDATE oauth_interactions SET completed_at = ${sql.timestamp(input.now)}
    WHERE workspace_id = ${input.workspaceId} AND id = ${input.id} AND completed_at IS NULL`);
  return result.rowCount > 0;
}

/**
 * A live interaction by its id alone, for the interaction RPCs, which name no workspace: a
 * deliberate service-role read (migrations/011) of one row named by a random id, whose
 * workspace every later step then runs in.
 */
export async function findLiveOAuthInteractionById(
  db: CommonQueryMethods,
  input: { id: string; now: Date },
): Promise<OAuthInteractionRow | null> {
  return db.maybeOne(sql.type(oauthInteractionRow)`
    SELECT ${columns} FROM oauth_interactions
    WHERE id = ${input.id} AND completed_at IS NULL AND expires_at > ${sql.timestamp(input.now)}`);
}

/** Deletes up to `limit` rows that expired before `before` (the sweep). */
export async function sweepExpiredOAuthInteractions(
  db: CommonQueryMethods,
  input: { before: Date; limit: number },
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM oauth_interactions WHERE id IN (
      SELECT id FROM oauth_interactions WHERE expires_at < ${sql.timestamp(input.before)} LIMIT ${input.limit})`);
  return result.rowCount;
}
