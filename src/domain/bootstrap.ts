import type { DatabasePool } from "slonik";
import { generateAdminKey } from "../crypto/admin-key.js";
import { advisoryXactLock } from "../db/advisory-locks.js";
import { countAdminKeys, insertAdminKey } from "../repositories/admin-keys.js";
import { countWorkspaces, insertWorkspace } from "../repositories/workspaces.js";

export interface BootstrapResult {
  readonly workspaceId: string;
  readonly workspaceSlug: string;
  /** The admin key in clear: shown once, never stored. */
  readonly adminKey: string;
  readonly adminKeyPrefix: string;
}

// Distinct from the migration lock key.
const bootstrapLockKey = 0x6b6762737472n;

/**
 * On the very first start (no workspace and no admin key yet): creates the "default"
 * workspace and a deployment-wide admin key with the introspect permission, so that a new
 * operator can call the admin API at once. Instances starting together serialise on a lock;
 * only one of them creates anything. Answers undefined when there was nothing to do.
 */
export async function bootstrap(pool: DatabasePool): Promise<BootstrapResult | undefined> {
  return pool.transaction(async (tx) => {
    await advisoryXactLock(tx, bootstrapLockKey);
    if ((await countWorkspaces(tx)) > 0 || (await countAdminKeys(tx)) > 0) return undefined;
    const workspace = await insertWorkspace(tx, { name: "Default", slug: "default" });
    const key = generateAdminKey();
    await insertAdminKey(tx, {
      workspaceId: null,
      name: "bootstrap",
      prefix: key.prefix,
      hash: key.hash,
      role: "admin",
      introspect: true,
      createdBy: "bootstrap",
    });
    return {
      workspaceId: workspace.id,
      workspaceSlug: workspace.slug,
      adminKey: key.secret,
      adminKeyPrefix: key.prefix,
    };
  });
}
