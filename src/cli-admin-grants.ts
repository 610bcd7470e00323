import { create } from "@bufbuild/protobuf";
import {
  AdminServiceListGrantsResponseSchema,
  RevokeGrantsResponseSchema,
} from "../gen/keygate/v1/admin_service_pb.js";
import { allPages, positional, str, ws } from "./cli-admin-arguments.js";
import { type CommandGroup, UsageError } from "./cli-admin-context.js";

/** What users gave the workspace's OAuth clients (docs/openid-provider.md, "Grants"). */
export const grants: CommandGroup = {
  list: {
    args: "[--workspace WORKSPACE] [--user USER] [--client CLIENT_ID]",
    summary: "The workspace's live grants, one per user and client.",
    options: { ...ws, user: { type: "string" }, client: { type: "string" } },
    async run(ctx) {
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      const u = str(ctx.values, "user");
      const userId = u ? await ctx.user(u, "--user") : "";
      const clientId = str(ctx.values, "client") ?? "";
      const items = await allPages(async (pageToken) => {
        const res = await client.listGrants(
          { workspaceId, userId, clientId, pageSize: 1000, pageToken },
          call,
        );
        return { items: res.grants, next: res.nextPageToken };
      });
      ctx.print(
        AdminServiceListGrantsResponseSchema,
        create(AdminServiceListGrantsResponseSchema, { grants: items }),
      );
    },
  },
  revoke: {
    args: "USER --client CLIENT_ID [--workspace WORKSPACE]",
    summary: "Ends a user's grant to a client: the client's tokens stop working at once.",
    options: { ...ws, client: { type: "string" } },
    async run(ctx) {
      const clientId = str(ctx.values, "client");
      if (!clientId) throw new UsageError("--client is required");
      const userId = await ctx.user(positional(ctx, "user (id or email address)"));
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      ctx.print(
        RevokeGrantsResponseSchema,
        await client.revokeGrants({ workspaceId, userId, clientId }, call),
      );
    },
  },
};
