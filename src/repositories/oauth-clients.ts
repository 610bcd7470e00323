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
  grant_types: z.array(z.enum(["authorization_code", "refresh_token", "client_credentials"])),
  token_endpoint_auth_method: z.enum([
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
  ]),
  jwks: z.object({ keys: z.array(z.record(z.string(), z.unknown())) }).nullable(),
  machine_session_id: z.string(),
  /** Until when the machine_session_id's revocation must last (its tokens' latest exp). */
  machine_access_expires_at: z.number().nullable(),
});
export type OAuthClientRow = z.infer<typeof oauthClientRow>;

const columns = sql.fragment`workspace_id, client_id, name, secret_hash, redirect_uris,
  post_logout_redirect_uris, first_party, scopes, backchannel_logout_uri, created_at,
  registered_dynamically, grant_types, token_endpoint_auth_method, jwks, machine_session_id,
  machine_access_expires_at`;

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
    grantTypes: readonly OAuthClientRow["grant_types"][number][];
    tokenEndpointAuthMethod: OAuthClientRow["token_endpoint_auth_method"];
    jwks: { keys: readonly Record<string, unknown>[] } | null;
    now: Date;
  },
): Promise<OAuthClientRow> {
  return db.one(sql.type(oauthClientRow)`
    INSERT INTO oauth_clients (workspace_id, client_id, name, secret_hash, redirect_uris,
                               post_logout_redirect_uris, first_party, scopes,
                               backchannel_logout_uri, created_at, registered_dynamically,
                               grant_types, token_endpoint_auth_method, jwks)
    VALUES (${input.workspaceId}, ${input.clientId}, ${input.name},
            ${input.secretHash === null ? null : sql.binary(input.secretHash)},
            ${sql.array([...input.redirectUris], "text")},
            ${sql.array([...input.postLogoutRedirectUris], "text")},
            ${input.firstParty}, ${sql.array([...input.scopes], "text")},
            ${input.backchannelLogoutUri}, ${sql.timestamp(input.now)},
            ${input.registeredDynamically},
            ${sql.array([...input.grantTypes], "text")}, ${input.tokenEndpointAuthMethod},
            ${input.jwks === null ? null : sql.jsonb(input.jwks as never)})
    RETURNING ${columns}`);
}

/**
 * A new secret hash and a new machine_session_id: the old secret stops working, and the
 * rotation trigger (migration 026) revokes the access tokens issued under the old id.
 * Answers the row, or null for an unknown client or one without a secret.
 */
export async function replaceOAuthClientSecret(
  db: CommonQueryMethods,
  input: { workspaceId: string; clientId: string; secretHash: Buffer },
): Promise<OAuthClientRow | null> {
  return db.maybeOne(sql.type(oauthClientRow)`
    UPDATE oauth_clients
    SET secret_hash = ${sql.binary(input.secretHash)}, machine_session_id = gen_random_uuid(),
        machine_access_expires_at = NULL
    WHERE workspace_id = ${input.workspaceId} AND client_id = ${input.clientId}
      AND secret_hash IS NOT NULL
    RETURNING ${columns}`);
}

/**
 * Records that a machine token of the client under `machineSessionId` lives until `until`,
 * so its revocation lasts as long (at most one write a minute: the time is kept rounded up).
 * Answers false when the client or that id is gone (deleted or rotated meanwhile).
 */
export async function recordMachineTokenExpiry(
  db: CommonQueryMethods,
  input: { workspaceId: string; clientId: string; machineSessionId: string; until: Date },
): Promise<boolean> {
  const rounded = new Date(Math.ceil(input.until.getTime() / 60_000) * 60_000);
  const row = await db.maybeOne(sql.type(z.object({ ok: z.boolean() }))`
    WITH updated AS (
      UPDATE oauth_clients SET machine_access_expires_at = ${sql.timestamp(rounded)}
      WHERE workspace_id = ${input.workspaceId} AND client_id = ${input.clientId}
        AND machine_session_id = ${input.machineSessionId}
        AND (machine_access_expires_at IS NULL
             OR machine_access_expires_at < ${sql.timestamp(input.until)})
      RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM updated) OR EXISTS (
      SELECT 1 FROM oauth_clients
      WHERE workspace_id = ${input.workspaceId} AND client_id = ${input.clientId}
        AND machine_session_id = ${input.machineSessionId}) AS ok`);
  return row?.ok ?? false;
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
