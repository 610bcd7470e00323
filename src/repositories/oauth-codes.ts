import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

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

const columns = sql.fragment`workspace_id, client_id, parent_session_id, user_id, redirect_uri,
  scopes, nonce, code_challenge, created_at, expires_at, used_at, grant_session_id, resources`;

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

/** The code, locked: concurrent exchanges of one code run one after the other. */
export async function lockOAuthCode(
  db: CommonQueryMethods,
  workspaceId: string,
  codeHash: Buffer,
): Promise<OAuthCodeRow | null> {
  return db.maybeOne(sql.type(oauthCodeRow)`
    SELECT ${columns} FROM oauth_codes
    WHERE workspace_id = ${workspaceId} AND code_hash = ${sql.binary(codeHash)}
    FOR UPDATE`);
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
