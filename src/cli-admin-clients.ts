import { readFile } from "node:fs/promises";
import {
  CreateOAuthClientResponseSchema,
  DeleteOAuthClientResponseSchema,
  ListOAuthClientsResponseSchema,
  RotateOAuthClientSecretResponseSchema,
} from "../gen/keygate/v1/admin_service_pb.js";
import { positional, str, ws } from "./cli-admin-arguments.js";
import { type CommandGroup, UsageError } from "./cli-admin-context.js";

/** The OAuth clients of a workspace's OpenID Provider (docs/openid-provider.md). */
export const clients: CommandGroup = {
  create: {
    args: "--name NAME --redirect-uri URI... [--workspace WORKSPACE] [--public] [--third-party] [--post-logout-uri URI]... [--backchannel-logout-uri URI] [--scope SCOPE]... [--grant-type TYPE]... [--auth-method METHOD] [--jwks-file PATH]",
    summary:
      "Registers a client; a confidential one's secret is printed this once. A machine client: --grant-type client_credentials, no --redirect-uri.",
    options: {
      ...ws,
      name: { type: "string" },
      "redirect-uri": { type: "string", multiple: true },
      "post-logout-uri": { type: "string", multiple: true },
      "backchannel-logout-uri": { type: "string" },
      scope: { type: "string", multiple: true },
      public: { type: "boolean", default: false },
      "third-party": { type: "boolean", default: false },
      "grant-type": { type: "string", multiple: true },
      "auth-method": { type: "string" },
      "jwks-file": { type: "string" },
    },
    async run(ctx) {
      const name = str(ctx.values, "name");
      if (!name) throw new UsageError("--name is required");
      const redirectUris = (ctx.values["redirect-uri"] as string[] | undefined) ?? [];
      const grantTypes = (ctx.values["grant-type"] as string[] | undefined) ?? [];
      const userFlow = grantTypes.length === 0 || grantTypes.includes("authorization_code");
      if (userFlow && redirectUris.length === 0) {
        throw new UsageError("--redirect-uri is required (unless --grant-type client_credentials)");
      }
      const jwksFile = str(ctx.values, "jwks-file");
      let jwks = "";
      if (jwksFile !== undefined) {
        try {
          jwks = await readFile(jwksFile, "utf8");
        } catch {
          throw new UsageError(`--jwks-file: cannot read ${jwksFile}`);
        }
      }
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      const res = await client.createOAuthClient(
        {
          workspaceId,
          name,
          redirectUris,
          postLogoutRedirectUris: (ctx.values["post-logout-uri"] as string[] | undefined) ?? [],
          backchannelLogoutUri: str(ctx.values, "backchannel-logout-uri") ?? "",
          scopes: (ctx.values.scope as string[] | undefined) ?? [],
          confidential: ctx.values.public !== true,
          firstParty: ctx.values["third-party"] !== true,
          grantTypes,
          tokenEndpointAuthMethod: str(ctx.values, "auth-method") ?? "",
          jwks,
        },
        call,
      );
      ctx.print(CreateOAuthClientResponseSchema, res);
    },
  },
  list: {
    args: "[--workspace WORKSPACE]",
    summary: "The workspace's clients (never their secrets).",
    options: { ...ws },
    async run(ctx) {
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      ctx.print(
        ListOAuthClientsResponseSchema,
        await client.listOAuthClients({ workspaceId }, call),
      );
    },
  },
  "rotate-secret": {
    args: "CLIENT_ID [--workspace WORKSPACE]",
    summary:
      "Gives a client a new secret (printed this once); the old one and the client's own tokens stop at once.",
    options: { ...ws },
    async run(ctx) {
      const clientId = positional(ctx, "client id");
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      ctx.print(
        RotateOAuthClientSecretResponseSchema,
        await client.rotateOAuthClientSecret({ workspaceId, clientId }, call),
      );
    },
  },
  delete: {
    args: "CLIENT_ID [--workspace WORKSPACE]",
    summary: "Deletes a client and ends every grant it holds.",
    options: { ...ws },
    async run(ctx) {
      const clientId = positional(ctx, "client id to delete");
      const { client, call } = ctx.admin();
      const workspaceId = await ctx.workspace(str(ctx.values, "workspace"), { required: true });
      ctx.print(
        DeleteOAuthClientResponseSchema,
        await client.deleteOAuthClient({ workspaceId, clientId }, call),
      );
    },
  },
};
