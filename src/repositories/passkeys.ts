import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";

const idRow = z.object({ id: z.string() });

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
const passkeyWithUserHandleRow = passkeyRow.extend({
  user_handle: z.instanceof(Buffer).nullable(),
});

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

/**
 * The credential of this workspace with that id, with its member's passkey user handle (what
 * a username-less assertion must claim); another workspace's is never found.
 */
export async function findPasskeyForAssertion(
  db: CommonQueryMethods,
  workspaceId: string,
  credentialId: Buffer,
): Promise<(PasskeyRow & { user_handle: Buffer | null }) | null> {
  return db.maybeOne(sql.type(passkeyWithUserHandleRow)`
    SELECT p.id, p.workspace_id, p.user_id, p.credential_id, p.public_key, p.sign_count,
           p.transports, p.backed_up, p.device_type, p.name, p.created_at, p.last_used_at,
           m.passkey_user_handle AS user_handle
    FROM passkeys p
    JOIN workspace_members m ON m.workspace_id = p.workspace_id AND m.user_id = p.user_id
    WHERE p.workspace_id = ${workspaceId} AND p.credential_id = ${sql.binary(credentialId)}`);
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

/**
 * Records a successful assertion. The counter only moves forward: of two assertions that
 * raced with the same counter, the second finds no row.
 */
export async function recordPasskeyUse(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    id: string;
    previousCount: number;
    signCount: number;
    backedUp: boolean;
    now: Date;
  },
): Promise<boolean> {
  const row = await db.maybeOne(sql.type(idRow)`
    UPDATE passkeys SET sign_count = ${input.signCount}, backed_up = ${input.backedUp},
                        last_used_at = ${sql.timestamp(input.now)}
    WHERE workspace_id = ${input.workspaceId} AND id = ${input.id}
      AND sign_count = ${input.previousCount}
    RETURNING id`);
  return row !== null;
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
