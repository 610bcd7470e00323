import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

const countRow = z.object({ count: z.number() });

export const adminKeyRow = z.object({
  id: z.string(),
  workspace_id: z.string().nullable(),
  name: z.string(),
  prefix: z.string(),
  role: z.enum(["read_only", "admin"]),
  introspect: z.boolean(),
  created_by: z.string(),
  created_by_user_id: z.string().nullable(),
  created_at: z.number(),
  last_used_at: z.number().nullable(),
  expires_at: z.number().nullable(),
  revoked_at: z.number().nullable(),
});
export type AdminKeyRow = z.infer<typeof adminKeyRow>;

export async function insertAdminKey(
  db: CommonQueryMethods,
  input: {
    workspaceId: string | null;
    name: string;
    prefix: string;
    hash: Buffer;
    role: "read_only" | "admin";
    introspect: boolean;
    createdBy: string;
    /** The signed-in user the key comes from, directly or through their keys. */
    createdByUserId?: string | null;
    expiresAt?: Date | null;
    /** Defaults to the database's clock. */
    now?: Date;
  },
): Promise<AdminKeyRow> {
  return db.one(sql.type(adminKeyRow)`
    INSERT INTO admin_keys (workspace_id, name, prefix, secret_hash, role, introspect, created_by,
                            created_by_user_id, created_at, expires_at)
    VALUES (${input.workspaceId}, ${input.name}, ${input.prefix}, ${sql.binary(input.hash)},
            ${input.role}, ${input.introspect}, ${input.createdBy}, ${input.createdByUserId ?? null},
            ${input.now ? sql.timestamp(input.now) : sql.fragment`now()`},
            ${input.expiresAt ? sql.timestamp(input.expiresAt) : null})
    RETURNING id, workspace_id, name, prefix, role, introspect, created_by, created_by_user_id,
              created_at, last_used_at, expires_at, revoked_at`);
}

export async function countAdminKeys(db: CommonQueryMethods): Promise<number> {
  return db.oneFirst(sql.type(countRow)`
    SELECT count(*)::int AS count FROM admin_keys`);
}

const keyForAuthenticationRow = z.object({
  id: z.string(),
  workspace_id: z.string().nullable(),
  secret_hash: z.instanceof(Buffer),
  role: z.enum(["read_only", "admin"]),
  introspect: z.boolean(),
  expires_at: z.number().nullable(),
  revoked_at: z.number().nullable(),
  created_by_user_id: z.string().nullable(),
  creator_role: z.enum(["owner", "admin", "member"]).nullable(),
});

/**
 * The key with this visible prefix, with its secret hash to compare and the role its creator
 * holds now in the key's workspace (null unless an active, unblocked member).
 */
export async function findAdminKeyForAuthentication(
  db: CommonQueryMethods,
  prefix: string,
): Promise<z.infer<typeof keyForAuthenticationRow> | null> {
  return db.maybeOne(sql.type(keyForAuthenticationRow)`
    SELECT k.id, k.workspace_id, k.secret_hash, k.role, k.introspect, k.expires_at, k.revoked_at,
           k.created_by_user_id,
           (SELECT m.role FROM workspace_members m JOIN users u ON u.id = m.user_id
            WHERE m.workspace_id = k.workspace_id AND m.user_id = k.created_by_user_id
              AND m.status = 'active' AND NOT u.blocked) AS creator_role
    FROM admin_keys k WHERE k.prefix = ${prefix}`);
}

/** Records a use of the key at `now`, unless one was recorded in the minute before. */
export async function touchAdminKey(db: CommonQueryMethods, id: string, now: Date): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE admin_keys SET last_used_at = ${sql.timestamp(now)}
    WHERE id = ${id} AND (last_used_at IS NULL OR last_used_at < ${sql.timestamp(new Date(now.getTime() - 60_000))})`);
}

/**
 * What the audit log keeps of a new key: its id and public prefix (ListAdminKeys shows both)
 * and its powers; the rest of the secret never leaves.
 */
export function adminKeyCreatedDetails(
  row: Pick<AdminKeyRow, "id" | "prefix" | "role" | "introspect" | "expires_at">,
): Record<string, string | boolean | null> {
  return {
    admin_key_id: row.id,
    prefix: row.prefix,
    role: row.role,
    introspect: row.introspect,
    expire_time: row.expires_at === null ? null : new Date(row.expires_at).toISOString(),
  };
}
