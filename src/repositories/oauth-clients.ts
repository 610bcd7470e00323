import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

export const oauthClientRow = z.object({
  workspace_id: z.string(),
  client_id: z.string(),
  name: z.string(),
  secret_hash: z.instanceof(Buffer).nullable(),
  redirect_uris: z.array(z.string()),
  post_logout_redirect_uris: z.array(z.string()),
  first_party: z.boolean(),
  scopes: z.array(z.string()),
  backchannel_logout_uri: z.string().nullable(),
  created_at: z.number(),
  /** Registered by itself at /oauth2/register (RFC 7591), not by an admin. */
  registered_dynamically: z.boolean(),
});
export type OAuthClientRow = z.infer<typeof oauthClientRow>;

const columns = sql.fragment`workspace_id, client_id, name, secret_hash, redirect_uris,
  post_logout_redirect_uris, first_party, scopes, backchannel_logout_uri, created_at,
  registered_dynamically`;

export async function insertOAuthClient(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    clientId: string;
    name: string;
    secretHash: Buffer | null;
    redirectUris: readonly string[];
    postLogoutRedirectUris: readonly string[];
    firstParty: boolean;
    scopes: readonly string[];
    backchannelLogoutUri: string | null;
    registeredDynamically: boolean;
    now: Date;
  },
): Promise<OAuthClientRow> {
  return db.one(sql.type(oauthClientRow)`
    INSERT INTO oauth_clients (workspace_id, client_id, name, secret_hash, redirect_uris,
                               post_logout_redirect_uris, first_party, scopes,
                               backchannel_logout_uri, created_at, registered_dynamically)
    VALUES (${input.workspaceId}, ${input.clientId}, ${input.name},
            ${input.secretHash === null ? null : sql.binary(input.secretHash)},
            ${sql.array([...input.redirectUris], "text")},
            ${sql.array([...input.postLogoutRedirectUris], "text")},
            ${input.firstParty}, ${sql.array([...input.scopes], "text")},
            ${input.backchannelLogoutUri}, ${sql.timestamp(input.now)},
            ${input.registeredDynamically})
    RETURNING ${columns}`);
}

export async function findOAuthClient(
  db: CommonQueryMethods,
  workspaceId: string,
  clientId: string,
): Promise<OAuthClientRow | null> {
  return db.maybeOne(sql.type(oauthClientRow)`
    SELECT ${columns} FROM oauth_clients
    WHERE workspace_id = ${workspaceId} AND client_id = ${clientId}`);
}

export async function listOAuthClients(
  db: CommonQueryMethods,
  workspaceId: string,
): Promise<readonly OAuthClientRow[]> {
  return db.any(sql.type(oauthClientRow)`
    SELECT ${columns} FROM oauth_clients
    WHERE workspace_id = ${workspaceId}
    ORDER BY created_at, client_id`);
}

/**
 * Deletes a client; its grants' sessions go with it (ON DELETE CASCADE), and the sessions'
 * revocation trigger ends their tokens everywhere. Answers false for an unknown client.
 */
export async function deleteOAuthClient(
  db: CommonQueryMethods,
  workspaceId: string,
  clientId: string,
): Promise<boolean> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM oauth_clients WHERE workspace_id = ${workspaceId} AND client_id = ${clientId}`);
  return result.rowCount > 0;
}

/** How many clients registered themselves in the workspace (a cap bounds them). */
export async function countDynamicOAuthClients(
  db: CommonQueryMethods,
  workspaceId: string,
): Promise<number> {
  return db.oneFirst(sql.type(z.object({ count: z.number() }))`
    SELECT count(*)::int AS count FROM oauth_clients
    WHERE workspace_id = ${workspaceId} AND registered_dynamically`);
}
