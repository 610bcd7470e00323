import type { ServiceImpl } from "@connectrpc/connect";
import type { AdminService } from "../../../gen/keygate/v1/admin_service_pb.js";
import type { AdminDeps } from "../../domain/deps.js";
import { listWorkspaceGrants, revokeMemberGrants } from "../../domain/oauth/grants.js";
import { meta } from "../call-context.js";
import { grantOf } from "../convert.js";
import { callerOf } from "./caller.js";

type Impl = ServiceImpl<typeof AdminService>;

/** AdminService RPCs about the grants users gave the workspace's OAuth clients. */
export function adminGrantsHandlers(deps: AdminDeps) {
  return {
    async listGrants(req, ctx) {
      const page = await listWorkspaceGrants(deps, callerOf(ctx), {
        workspaceId: req.workspaceId,
        userId: req.userId,
        clientId: req.clientId,
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      return { grants: page.grants.map(grantOf), nextPageToken: page.nextPageToken };
    },
    async revokeGrants(req, ctx) {
      const revokedCount = await revokeMemberGrants(deps, meta(ctx), callerOf(ctx), {
        workspaceId: req.workspaceId,
        userId: req.userId,
        clientId: req.clientId,
      });
      return { revokedCount };
    },
  } satisfies Pick<Impl, "listGrants" | "revokeGrants">;
}
