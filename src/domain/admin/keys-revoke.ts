import { NotFoundError } from "../../errors.js";
import {
  findAdminKey,
  revokeAdminKey as revokeKey,
} from "../../repositories/admin-key-management.js";
import type { AdminKeyRow } from "../../repositories/admin-keys.js";
import {
  auditedCaller,
  type Caller,
  callerWorkspace,
  requireDeploymentAdmin,
  requireWorkspaceAdmin,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { Violations } from "../validate.js";
import { inKeyScope, keyScopeOf } from "./keys-scope.js";

/**
 * RevokeAdminKey. A workspace-scoped caller only finds its workspace's keys (any other is
 * NOT_FOUND, deployment-wide ones included); finding a key is not yet leave to revoke it
 * (a read-only key is PERMISSION_DENIED). Each instance checks a key against the database
 * at least once a second, and this one forgets what it knew at once, so the revocation holds
 * within a second everywhere. Revoking a revoked key answers it unchanged.
 */
export async function revokeAdminKey(
  deps: Pick<AdminDeps, "pool" | "clock" | "adminKeys">,
  meta: RequestMeta,
  caller: Caller,
  input: { adminKeyId: string },
): Promise<AdminKeyRow> {
  new Violations()
    .required("admin_key_id", input.adminKeyId, 100)
    .uuid("admin_key_id", input.adminKeyId)
    .throwIfAny();
  const own = callerWorkspace(caller);
  const revoked = await inKeyScope(deps, own, async (tx) => {
    const key = await findAdminKey(tx, keyScopeOf(own), input.adminKeyId);
    if (key === null) throw new NotFoundError("admin key not found");
    if (key.workspace_id === null) requireDeploymentAdmin(caller);
    else requireWorkspaceAdmin(caller, key.workspace_id);
    const result = await revokeKey(
      tx,
      { id: key.id, workspaceId: key.workspace_id },
      deps.clock.now(),
    );
    if (result === null) throw new NotFoundError("admin key not found");
    if (result.revoked) {
      await audit(tx, deps, meta, {
        type: "admin_key_revoked",
        workspaceId: key.workspace_id,
        ...auditedCaller(caller),
        outcome: "success",
        details: { admin_key_id: key.id, prefix: key.prefix },
      });
    }
    return result.key;
  });
  deps.adminKeys.clear();
  return revoked;
}
