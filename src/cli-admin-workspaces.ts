import { create, fromJson, type JsonObject } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import {
  CreateWorkspaceResponseSchema,
  GetWorkspaceResponseSchema,
  ListWorkspacesResponseSchema,
  UpdateWorkspaceSettingsResponseSchema,
} from "../gen/keygate/v1/admin_service_pb.js";
import { WorkspaceSettingsSchema } from "../gen/keygate/v1/types_pb.js";
import { allPages, positional, str, ws } from "./cli-admin-arguments.js";
import { type CommandGroup, UsageError } from "./cli-admin-context.js";

// The workspace commands, `workspaces` and `settings`, and the settings' KEY=VALUE syntax.

/**
 * `KEY=VALUE` pairs in the names and short values of KEYGATE_WORKSPACE_DEFAULTS
 * (`otp_login=required`, `rate_limits={"login_ip":{"limit":20,"window_seconds":600}}`),
 * as a keygate.v1.WorkspaceSettings. Unknown names are refused here, before any call.
 */
function settingsFrom(pairs: string[]) {
  const json: JsonObject = {};
  const fields = WorkspaceSettingsSchema.fields;
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`"${pair}" is not KEY=VALUE`);
    const key = pair.slice(0, eq);
    const raw = pair.slice(eq + 1);
    const field = fields.find((f) => f.name === key || f.jsonName === key);
    if (!field)
      throw new UsageError(
        `"${key}" is not a workspace setting; the settings are: ${fields.map((f) => f.name).join(", ")}`,
      );
    if (field.fieldKind === "enum") {
      const values = field.enum.values.filter((v) => v.number !== 0);
      const value = values.find(
        (v) => v.name === raw || v.name.endsWith(`_${raw.toUpperCase().replace(/-/g, "_")}`),
      );
      if (!value)
        throw new UsageError(
          `${key} is one of ${values
            .map((v) =>
              v.name
                .slice(field.enum.sharedPrefix?.length ?? 0)
                .replace(/^_/, "")
                .toLowerCase(),
            )
            .join(", ")}`,
        );
      json[field.jsonName] = value.name;
    } else {
      try {
        json[field.jsonName] = JSON.parse(raw);
      } catch {
        throw new UsageError(`${key}: "${raw}" is not a JSON value (true, 10, {...})`);
      }
    }
  }
  try {
    return fromJson(WorkspaceSettingsSchema, json);
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/^cannot decode /, ""));
  }
}

export const workspaces: CommandGroup = {
  list: {
    args: "[--slug-prefix PREFIX]",
    summary: "Workspaces the key can see.",
    options: { "slug-prefix": { type: "string" } },
    async run(ctx) {
      const { client, call } = ctx.admin();
      const items = await allPages(async (pageToken) => {
        const res = await client.listWorkspaces(
          { slugPrefix: str(ctx.values, "slug-prefix") ?? "", pageSize: 1000, pageToken },
          call,
        );
        return { items: res.workspaces, next: res.nextPageToken };
      });
      ctx.print(
        ListWorkspacesResponseSchema,
        create(ListWorkspacesResponseSchema, { workspaces: items }),
      );
    },
  },
  get: {
    args: "WORKSPACE",
    summary: "One workspace with its effective settings.",
    async run(ctx) {
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(positional(ctx, "workspace (id or slug)"));
      ctx.print(GetWorkspaceResponseSchema, await client.getWorkspace({ workspaceId }, call));
    },
  },
  create: {
    args: "--name NAME --slug SLUG [--owner USER]",
    summary: "A new workspace (deployment key), optionally with an existing user as owner.",
    options: { name: { type: "string" }, slug: { type: "string" }, owner: { type: "string" } },
    async run(ctx) {
      const name = str(ctx.values, "name");
      const slug = str(ctx.values, "slug");
      if (!name || !slug) throw new UsageError("--name and --slug are required");
      const { client, call } = ctx.admin();
      const owner = str(ctx.values, "owner");
      const ownerUserId = owner ? await ctx.user(owner, "--owner") : "";
      ctx.print(
        CreateWorkspaceResponseSchema,
        await client.createWorkspace({ name, slug, ownerUserId }, call),
      );
    },
  },
};

export const settings: CommandGroup = {
  get: {
    args: "[--workspace WORKSPACE]",
    summary: "The workspace's effective settings.",
    options: ws,
    async run(ctx) {
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      const res = await client.getWorkspace({ workspaceId }, call);
      ctx.print(WorkspaceSettingsSchema, res.settings ?? create(WorkspaceSettingsSchema));
    },
  },
  set: {
    args: "[--workspace WORKSPACE] KEY=VALUE... [--reset KEY,...]",
    summary:
      "Changes settings (otp_login=required password_min_length=12 ...); --reset returns keys to the defaults.",
    options: { ...ws, reset: { type: "string" } },
    async run(ctx) {
      const reset = (str(ctx.values, "reset") ?? "").split(",").filter(Boolean);
      if (ctx.positionals.length === 0 && reset.length === 0)
        throw new UsageError("give KEY=VALUE pairs or --reset KEY,...");
      const given = settingsFrom(ctx.positionals);
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      const res = await client.updateWorkspaceSettings(
        { workspaceId, settings: given, resetMask: create(FieldMaskSchema, { paths: reset }) },
        call,
      );
      ctx.print(UpdateWorkspaceSettingsResponseSchema, res);
    },
  },
};
