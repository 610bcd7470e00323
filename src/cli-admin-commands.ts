import { create } from "@bufbuild/protobuf";
import {
  AddMemberResponseSchema,
  BlockUserResponseSchema,
  CreateAdminKeyResponseSchema,
  GetUserResponseSchema,
  ListAdminKeysResponseSchema,
  ListAuditEventsResponseSchema,
  ListMembersResponseSchema,
  ListSigningKeysResponseSchema,
  ListUsersResponseSchema,
  ProvisionUserResponseSchema,
  RemoveMemberResponseSchema,
  ResetMemberFactorsResponseSchema,
  RevokeAdminKeyResponseSchema,
  RevokeSigningKeyResponseSchema,
  RotateSigningKeyResponseSchema,
  UnblockUserResponseSchema,
  UpdateMemberResponseSchema,
  UserStatusFilter,
} from "../gen/keygate/v1/admin_service_pb.js";
import { AdminKeyRole, MembershipStatus, Role } from "../gen/keygate/v1/types_pb.js";
import { allPages, positional, role, str, time, ws } from "./cli-admin-arguments.js";
import { clients } from "./cli-admin-clients.js";
import { type CommandGroup, isUuid, UsageError } from "./cli-admin-context.js";
import { grants } from "./cli-admin-grants.js";
import { settings, workspaces } from "./cli-admin-workspaces.js";

// The operator's tasks, one entry per command (the workspace ones in cli-admin-workspaces.ts).
// Each command names its arguments and options here, so `--help`, the usage text and the
// parser stay one list.

const statuses = { active: UserStatusFilter.ACTIVE, blocked: UserStatusFilter.BLOCKED } as const;

const users: CommandGroup = {
  list: {
    args: "[--workspace WORKSPACE] [--email-prefix PREFIX] [--status active|blocked]",
    summary: "Users, all of them or a workspace's members.",
    options: { ...ws, "email-prefix": { type: "string" }, status: { type: "string" } },
    async run(ctx) {
      const given = str(ctx.values, "status");
      const status = given
        ? statuses[given as keyof typeof statuses]
        : UserStatusFilter.UNSPECIFIED;
      if (status === undefined) throw new UsageError("--status is active or blocked");
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"));
      const emailPrefix = str(ctx.values, "email-prefix") ?? "";
      const items = await allPages(async (pageToken) => {
        const res = await client.listUsers(
          { workspaceId, emailPrefix, status, pageSize: 1000, pageToken },
          call,
        );
        return { items: res.users, next: res.nextPageToken };
      });
      ctx.print(ListUsersResponseSchema, create(ListUsersResponseSchema, { users: items }));
    },
  },
  find: {
    args: "USER",
    summary: "One user, by id or email address.",
    async run(ctx) {
      const userId = await ctx.user(positional(ctx, "user (id or email address)"));
      const { client, call } = ctx.admin();
      ctx.print(GetUserResponseSchema, await client.getUser({ userId }, call));
    },
  },
  block: {
    args: "USER [--reason TEXT]",
    summary: "Blocks the user everywhere and ends their sessions.",
    options: { reason: { type: "string" } },
    async run(ctx) {
      const userId = await ctx.user(positional(ctx, "user (id or email address)"));
      const { client, call } = ctx.admin();
      const reason = str(ctx.values, "reason") ?? "";
      ctx.print(BlockUserResponseSchema, await client.blockUser({ userId, reason }, call));
    },
  },
  unblock: {
    args: "USER",
    summary: "Lets a blocked user log in again.",
    async run(ctx) {
      const userId = await ctx.user(positional(ctx, "user (id or email address)"));
      const { client, call } = ctx.admin();
      ctx.print(UnblockUserResponseSchema, await client.unblockUser({ userId }, call));
    },
  },
};

const memberStatuses = {
  active: MembershipStatus.ACTIVE,
  disabled: MembershipStatus.DISABLED,
} as const;

const members: CommandGroup = {
  list: {
    args: "[--workspace WORKSPACE]",
    summary: "The workspace's members with their roles.",
    options: ws,
    async run(ctx) {
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      const items = await allPages(async (pageToken) => {
        const res = await client.listMembers({ workspaceId, pageSize: 1000, pageToken }, call);
        return { items: res.memberships, next: res.nextPageToken };
      });
      ctx.print(
        ListMembersResponseSchema,
        create(ListMembersResponseSchema, { memberships: items }),
      );
    },
  },
  add: {
    args: "USER [--workspace WORKSPACE] [--role owner|admin|member]",
    summary: "Adds an existing user (by id or address), or invites an address that has none.",
    options: { ...ws, role: { type: "string" } },
    async run(ctx) {
      const who = positional(ctx, "user (id or email address)");
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      const request = isUuid(who) ? { userId: who } : { email: who };
      ctx.print(
        AddMemberResponseSchema,
        await client.addMember(
          { workspaceId, ...request, role: role(str(ctx.values, "role"), "member") },
          call,
        ),
      );
    },
  },
  update: {
    args: "USER [--workspace WORKSPACE] [--role owner|admin|member] [--status active|disabled]",
    summary: "Changes a member's role or status.",
    options: { ...ws, role: { type: "string" }, status: { type: "string" } },
    async run(ctx) {
      const given = str(ctx.values, "status");
      const status = given
        ? memberStatuses[given as keyof typeof memberStatuses]
        : MembershipStatus.UNSPECIFIED;
      if (status === undefined) throw new UsageError("--status is active or disabled");
      const r = str(ctx.values, "role");
      if (!r && !given) throw new UsageError("give --role or --status");
      const userId = await ctx.user(positional(ctx, "user (id or email address)"));
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      ctx.print(
        UpdateMemberResponseSchema,
        await client.updateMember(
          { workspaceId, userId, role: r ? role(r) : Role.UNSPECIFIED, status },
          call,
        ),
      );
    },
  },
  remove: {
    args: "USER [--workspace WORKSPACE]",
    summary: "Removes the user from the workspace and ends their sessions there.",
    options: ws,
    async run(ctx) {
      const userId = await ctx.user(positional(ctx, "user (id or email address)"));
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      ctx.print(
        RemoveMemberResponseSchema,
        await client.removeMember({ workspaceId, userId }, call),
      );
    },
  },
  "reset-factors": {
    args: "USER [--workspace WORKSPACE]",
    summary:
      "Removes the member's passkeys, authenticator app and recovery codes in the workspace and ends their sessions there.",
    options: ws,
    async run(ctx) {
      const userId = await ctx.user(positional(ctx, "user (id or email address)"));
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      ctx.print(
        ResetMemberFactorsResponseSchema,
        await client.resetMemberFactors({ workspaceId, userId }, call),
      );
    },
  },
};

const adminKey: CommandGroup = {
  create: {
    args: "--name NAME [--workspace WORKSPACE] [--role admin|read_only] [--introspect] [--expires ISO-TIME]",
    summary: "A new admin key; its secret is printed this once.",
    options: {
      name: { type: "string" },
      ...ws,
      role: { type: "string" },
      introspect: { type: "boolean", default: false },
      expires: { type: "string" },
      // --deployment (a first key written straight to DATABASE_URL, no server and no admin
      // key needed) is wired in here: its branch runs before ctx.admin() is asked for.
    },
    async run(ctx) {
      const name = str(ctx.values, "name");
      if (!name) throw new UsageError("--name is required");
      const keyRole = { admin: AdminKeyRole.ADMIN, read_only: AdminKeyRole.READ_ONLY }[
        str(ctx.values, "role") ?? "admin"
      ];
      if (keyRole === undefined) throw new UsageError("--role is admin or read_only");
      const expireTime = time(str(ctx.values, "expires"), "--expires");
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"));
      const res = await client.createAdminKey(
        {
          name,
          workspaceId,
          role: keyRole,
          introspect: ctx.values.introspect === true,
          ...(expireTime ? { expireTime } : {}),
        },
        call,
      );
      ctx.print(CreateAdminKeyResponseSchema, res);
    },
  },
  list: {
    args: "[--workspace WORKSPACE]",
    summary: "Admin keys (deployment keys, or a workspace's), without their secrets.",
    options: ws,
    async run(ctx) {
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"));
      const items = await allPages(async (pageToken) => {
        const res = await client.listAdminKeys({ workspaceId, pageSize: 1000, pageToken }, call);
        return { items: res.adminKeys, next: res.nextPageToken };
      });
      ctx.print(
        ListAdminKeysResponseSchema,
        create(ListAdminKeysResponseSchema, { adminKeys: items }),
      );
    },
  },
  revoke: {
    args: "KEY_ID",
    summary: "Revokes an admin key at once.",
    async run(ctx) {
      const adminKeyId = positional(ctx, "key id to revoke");
      const { client, call } = ctx.admin();
      ctx.print(RevokeAdminKeyResponseSchema, await client.revokeAdminKey({ adminKeyId }, call));
    },
  },
};

const provisionUser: CommandGroup = {
  "": {
    args: "--email EMAIL [--password P] [--workspace WORKSPACE] [--role owner|admin|member] [--verified]",
    summary: 'Creates the user, or finds the existing one ("created": false), as a member.',
    options: {
      email: { type: "string" },
      password: { type: "string" },
      ...ws,
      role: { type: "string" },
      verified: { type: "boolean", default: false },
    },
    async run(ctx) {
      const email = str(ctx.values, "email");
      if (!email) throw new UsageError("--email is required");
      const r = role(str(ctx.values, "role"), "member");
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      const res = await client.provisionUser(
        {
          email,
          password: str(ctx.values, "password") ?? "",
          emailVerified: ctx.values.verified === true,
          workspaceId,
          role: r,
        },
        call,
      );
      ctx.print(ProvisionUserResponseSchema, res);
    },
  },
};

const keys: CommandGroup = {
  rotate: {
    args: "[--algorithm RS256|ES256|EdDSA]",
    summary: "Publishes the next signing key.",
    options: { algorithm: { type: "string" } },
    async run(ctx) {
      const { client, call } = ctx.admin();
      const algorithm = str(ctx.values, "algorithm") ?? "";
      ctx.print(RotateSigningKeyResponseSchema, await client.rotateSigningKey({ algorithm }, call));
    },
  },
  list: {
    args: "",
    summary: "Signing keys with their status.",
    async run(ctx) {
      const { client, call } = ctx.admin();
      ctx.print(ListSigningKeysResponseSchema, await client.listSigningKeys({}, call));
    },
  },
  revoke: {
    args: "KID",
    summary: "Revokes a signing key that may be compromised: its tokens are refused at once.",
    async run(ctx) {
      const kid = positional(ctx, "kid of the signing key to revoke");
      const { client, call } = ctx.admin();
      ctx.print(RevokeSigningKeyResponseSchema, await client.revokeSigningKey({ kid }, call));
    },
  },
};

const audit: CommandGroup = {
  "": {
    args: "[--workspace WORKSPACE] [--type TYPE]... [--user USER] [--since ISO-TIME] [--until ISO-TIME] [--limit N]",
    summary: "Audit events, newest first (100 by default, at most 1000).",
    options: {
      ...ws,
      type: { type: "string", multiple: true },
      user: { type: "string" },
      since: { type: "string" },
      until: { type: "string" },
      limit: { type: "string" },
    },
    async run(ctx) {
      const limit = Number(str(ctx.values, "limit") ?? "100");
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
        throw new UsageError("--limit is a whole number from 1 to 1000");
      const startTime = time(str(ctx.values, "since"), "--since");
      const endTime = time(str(ctx.values, "until"), "--until");
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"));
      const u = str(ctx.values, "user");
      const userId = u ? await ctx.user(u, "--user") : "";
      const types = (ctx.values.type as string[] | undefined) ?? [];
      const res = await client.listAuditEvents(
        {
          workspaceId,
          userId,
          types,
          pageSize: limit,
          ...(startTime ? { startTime } : {}),
          ...(endTime ? { endTime } : {}),
        },
        call,
      );
      ctx.print(ListAuditEventsResponseSchema, res);
    },
  },
};

export const adminCommandGroups: Readonly<Record<string, CommandGroup>> = {
  workspaces,
  settings,
  users,
  members,
  "provision-user": provisionUser,
  "admin-key": adminKey,
  keys,
  clients,
  grants,
  audit,
};
