import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type AdminService,
  type BlockUserRequest,
  type DeleteUserRequest,
  type GetUserRequest,
  type ListUsersRequest,
  type MarkEmailVerifiedRequest,
  type ProvisionUserRequest,
  type RevokeUserSessionsRequest,
  type UnblockUserRequest,
  type UpdateUserMetadataRequest,
  UserStatusFilter,
} from "../../../gen/keygate/v1/admin_service_pb.js";
import {
  getUser,
  listUsers,
  markUserEmailVerified,
  type UserStatus,
  updateUserMetadata,
} from "../../domain/admin/users.js";
import {
  blockUser,
  deleteUser,
  revokeUserSessions,
  unblockUser,
} from "../../domain/admin/users-access.js";
import { provisionUser } from "../../domain/admin/users-provision.js";
import { type Caller, callerWorkspace } from "../../domain/admin-auth.js";
import type { AdminDeps } from "../../domain/deps.js";
import type { AdminUserRow } from "../../domain/model.js";
import { Violations } from "../../domain/validate.js";
import { meta } from "../call-context.js";
import { invitedUserOf, membershipOf, roleIn, userOf } from "../convert.js";
import { callerOf } from "./caller.js";

/**
 * A user as an admin answer carries it: with the lockout state of the account for
 * deployment-wide callers only, since it belongs to the account, not to any one workspace
 * (SECURITY.md 29).
 */
function adminUserOf(u: AdminUserRow, now: Date, caller: Caller) {
  const user = userOf(u);
  if (callerWorkspace(caller) !== null) return user;
  // A lockout that has run out is no lockout: only a future end is answered.
  if (u.locked_until !== null && u.locked_until > now.getTime())
    user.lockedUntil = timestampFromMs(Math.floor(u.locked_until));
  user.failedLoginCount = Math.max(0, u.failed_login_count);
  return user;
}

function statusFrom(status: UserStatusFilter): UserStatus {
  switch (status) {
    case UserStatusFilter.UNSPECIFIED:
      return "any";
    case UserStatusFilter.ACTIVE:
      return "active";
    case UserStatusFilter.BLOCKED:
      return "blocked";
    default:
      new Violations().add("status", "is not a known status filter").throwIfAny();
      throw new Error("unreachable");
  }
}

/** AdminService RPCs about users: proto ⇄ domain only; the flows are in src/domain/admin. */
export function adminUsersHandlers(deps: AdminDeps) {
  const now = () => deps.clock.now();
  return {
    async provisionUser(req: ProvisionUserRequest, ctx: HandlerContext) {
      const create = req.createWorkspace;
      if (create) {
        // Settings and another owner are CreateWorkspace's business; this RPC takes the
        // provisioned user's role instead.
        const v = new Violations();
        if (create.settings)
          v.add("create_workspace.settings", "is not supported here; use UpdateWorkspaceSettings");
        if (create.ownerUserId !== "")
          v.add("create_workspace.owner_user_id", "is not supported here; use role");
        v.throwIfAny();
      }
      const result = await provisionUser(deps, callerOf(ctx), meta(ctx), {
        email: req.email,
        password: req.password,
        emailVerified: req.emailVerified,
        metadata: req.metadata,
        workspaceId: req.workspaceId,
        createWorkspace: create ? { name: create.name, slug: create.slug } : undefined,
        role: roleIn(req.role) ?? "member",
      });
      return {
        user:
          result.membership.status === "invited"
            ? invitedUserOf(result.user)
            : adminUserOf(result.user, now(), callerOf(ctx)),
        membership: membershipOf(result.membership, true),
        created: result.created,
      };
    },

    async getUser(req: GetUserRequest, ctx: HandlerContext) {
      return {
        user: adminUserOf(
          await getUser(deps, callerOf(ctx), { userId: req.userId, workspaceId: req.workspaceId }),
          now(),
          callerOf(ctx),
        ),
      };
    },

    async listUsers(req: ListUsersRequest, ctx: HandlerContext) {
      const page = await listUsers(deps, callerOf(ctx), {
        pageSize: req.pageSize,
        pageToken: req.pageToken,
        emailPrefix: req.emailPrefix,
        status: statusFrom(req.status),
        workspaceId: req.workspaceId,
      });
      const at = now();
      return {
        users: page.users.map((u) => adminUserOf(u, at, callerOf(ctx))),
        nextPageToken: page.nextPageToken,
      };
    },

    async blockUser(req: BlockUserRequest, ctx: HandlerContext) {
      const user = await blockUser(deps, callerOf(ctx), meta(ctx), req);
      return { user: adminUserOf(user, now(), callerOf(ctx)) };
    },

    async unblockUser(req: UnblockUserRequest, ctx: HandlerContext) {
      const user = await unblockUser(deps, callerOf(ctx), meta(ctx), req.userId);
      return { user: adminUserOf(user, now(), callerOf(ctx)) };
    },

    async markEmailVerified(req: MarkEmailVerifiedRequest, ctx: HandlerContext) {
      const user = await markUserEmailVerified(deps, callerOf(ctx), meta(ctx), req.userId);
      return { user: adminUserOf(user, now(), callerOf(ctx)) };
    },

    async deleteUser(req: DeleteUserRequest, ctx: HandlerContext) {
      await deleteUser(deps, callerOf(ctx), meta(ctx), req);
      return {};
    },

    async revokeUserSessions(req: RevokeUserSessionsRequest, ctx: HandlerContext) {
      const revokedCount = await revokeUserSessions(deps, callerOf(ctx), meta(ctx), req);
      return { revokedCount };
    },

    async updateUserMetadata(req: UpdateUserMetadataRequest, ctx: HandlerContext) {
      const user = await updateUserMetadata(deps, callerOf(ctx), meta(ctx), {
        userId: req.userId,
        workspaceId: req.workspaceId,
        metadata: req.metadata,
        merge: req.merge,
      });
      return { user: adminUserOf(user, now(), callerOf(ctx)) };
    },
  } satisfies Partial<ServiceImpl<typeof AdminService>>;
}
