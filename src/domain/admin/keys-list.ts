import { z } from "zod";
import { listAdminKeys as listKeys } from "../../repositories/admin-key-management.js";
import type { AdminKeyRow } from "../../repositories/admin-keys.js";
import {
  type Caller,
  callerWorkspace,
  requireDeploymentRead,
  requireWorkspaceRead,
} from "../admin-auth.js";
import type { AuthDeps } from "../deps.js";
import { decodePageToken, pageOf, pageSize } from "../pagination.js";
import { Violations } from "../validate.js";
import { inKeyScope, keyScopeOf } from "./keys-scope.js";

const cursor = z.object({ c: z.string().regex(/^-?\d{1,20}$/), i: z.uuid() });

/**
 * ListAdminKeys, never with secrets (the rows hold none). A workspace-scoped caller sees its
 * workspace's keys (workspace_id may only name it); a deployment-wide key sees every key, or
 * one workspace's. Ordered by creation, then id.
 */
export async function listAdminKeys(
  deps: Pick<AuthDeps, "pool">,
  caller: Caller,
  input: { workspaceId: string; pageSize: number; pageToken: string },
): Promise<{ keys: readonly AdminKeyRow[]; nextPageToken: string }> {
  new Violations().uuid("workspace_id", input.workspaceId).throwIfAny();
  const own = callerWorkspace(caller);
  let workspaceId: string | null;
  if (own === null) {
    requireDeploymentRead(caller);
    workspaceId = input.workspaceId === "" ? null : input.workspaceId;
  } else {
    workspaceId = input.workspaceId === "" ? own : input.workspaceId;
    requireWorkspaceRead(caller, workspaceId);
  }
  // The filter is part of the list's name, so a token from another filter is refused.
  const list = `admin_keys:${workspaceId ?? "*"}`;
  const after = decodePageToken(input.pageToken, list, cursor);
  const size = pageSize(input.pageSize);
  const rows = await inKeyScope(deps, workspaceId, (tx) =>
    listKeys(tx, keyScopeOf(workspaceId), {
      after: after ? { createdAtMicros: after.c, id: after.i } : undefined,
      limit: size + 1,
    }),
  );
  const { page, nextPageToken } = pageOf(rows, size, list, (last) => ({
    c: last.cursor.createdAtMicros,
    i: last.cursor.id,
  }));
  return { keys: page.map((r) => r.row), nextPageToken };
}
