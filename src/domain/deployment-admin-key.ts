import type { DatabasePool } from "slonik";
import { generateAdminKey } from "../crypto/admin-key.js";
import {
  type AdminKeyRow,
  adminKeyCreatedDetails,
  insertAdminKey,
} from "../repositories/admin-keys.js";
import { insertAuditEvent } from "../repositories/audit.js";

export interface DeploymentAdminKeyInput {
  readonly name: string;
  readonly role: "read_only" | "admin";
  readonly introspect: boolean;
  /** undefined: never expires, like the key a first start prints. */
  readonly expiresAt: Date | undefined;
}

/**
 * A deployment-wide admin key written straight into the database, for whoever holds
 * DATABASE_URL: the way in when no admin key exists or none is at hand (a Kubernetes
 * deployment with KEYGATE_BOOTSTRAP=false, a lost bootstrap key). Holding the database
 * already grants everything a deployment key does, so no other credential is asked for;
 * the creation is audited like CreateAdminKey's. The secret is answered once, never stored.
 */
export async function createDeploymentAdminKey(
  pool: DatabasePool,
  input: DeploymentAdminKeyInput,
  now: Date = new Date(),
): Promise<{ key: AdminKeyRow; secret: string }> {
  const generated = generateAdminKey();
  const createdBy = "database";
  const key = await pool.transaction(async (tx) => {
    const row = await insertAdminKey(tx, {
      workspaceId: null,
      name: input.name,
      prefix: generated.prefix,
      hash: generated.hash,
      role: input.role,
      introspect: input.introspect,
      createdBy,
      expiresAt: input.expiresAt ?? null,
      now,
    });
    await insertAuditEvent(tx, {
      type: "admin_key_created",
      workspaceId: null,
      actor: createdBy,
      outcome: "success",
      details: adminKeyCreatedDetails(row),
      at: now,
    });
    return row;
  });
  return { key, secret: generated.secret };
}
