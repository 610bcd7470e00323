import { parseArgs } from "node:util";
import { type DescMessage, type MessageShape, toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  AdminService,
  CreateAdminKeyResponseSchema,
  ListAdminKeysResponseSchema,
  ListSigningKeysResponseSchema,
  ProvisionUserResponseSchema,
  RevokeAdminKeyResponseSchema,
  RevokeSigningKeyResponseSchema,
  RotateSigningKeyResponseSchema,
} from "../gen/keygate/v1/admin_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";

export const adminUsage = `Admin commands (talk to a running Keygate at KEYGATE_URL, default
http://127.0.0.1:8080, with the admin key in KEYGATE_ADMIN_KEY):
  admin-key create --name NAME [--workspace ID] [--role admin|read_only] [--introspect] [--expires ISO-TIME]
  admin-key list [--workspace ID]
  admin-key revoke KEY_ID
  provision-user --email EMAIL [--password P] [--workspace ID] [--role member|admin|owner] [--verified]
  keys rotate [--algorithm RS256|ES256|EdDSA]
  keys list
  keys revoke KID`;

export const adminCommands = new Set(["admin-key", "provision-user", "keys"]);

class UsageError extends Error {}

function print<D extends DescMessage>(schema: D, message: MessageShape<D>): void {
  process.stdout.write(`${toJsonString(schema, message, { prettySpaces: 2 })}\n`);
}

/** `keygate admin-key|provision-user|keys ...`: AdminService over Connect, answers as JSON. */
export async function runAdminCommand(
  argv: string[],
  env: Record<string, string | undefined>,
): Promise<number> {
  const key = env.KEYGATE_ADMIN_KEY;
  if (!key) {
    console.error("KEYGATE_ADMIN_KEY is not set: the admin commands need an admin key");
    return 78;
  }
  const admin = createClient(
    AdminService,
    createConnectTransport({
      baseUrl: env.KEYGATE_URL ?? "http://127.0.0.1:8080",
      httpVersion: "1.1",
    }),
  );
  const auth = { headers: { authorization: `Bearer ${key}` } };
  const [command, sub] = argv;
  try {
    const { values, positionals } = parseArgs({
      args: argv.slice(command === "provision-user" ? 1 : 2),
      allowPositionals: true,
      options: {
        name: { type: "string" },
        workspace: { type: "string", default: "" },
        role: { type: "string" },
        introspect: { type: "boolean", default: false },
        expires: { type: "string" },
        email: { type: "string" },
        password: { type: "string", default: "" },
        verified: { type: "boolean", default: false },
        algorithm: { type: "string", default: "" },
      },
    });
    if (command === "admin-key" && sub === "create") {
      if (!values.name) throw new UsageError("--name is required");
      const role = { admin: AdminKeyRole.ADMIN, read_only: AdminKeyRole.READ_ONLY }[
        values.role ?? "admin"
      ];
      if (role === undefined) throw new UsageError("--role is admin or read_only");
      const expires = values.expires ? new Date(values.expires) : undefined;
      if (expires && Number.isNaN(expires.getTime()))
        throw new UsageError("--expires is not a time");
      const res = await admin.createAdminKey(
        {
          name: values.name,
          workspaceId: values.workspace,
          role,
          introspect: values.introspect,
          ...(expires
            ? { expireTime: { seconds: BigInt(Math.floor(expires.getTime() / 1000)), nanos: 0 } }
            : {}),
        },
        auth,
      );
      print(CreateAdminKeyResponseSchema, res);
      return 0;
    }
    if (command === "admin-key" && sub === "list") {
      print(
        ListAdminKeysResponseSchema,
        await admin.listAdminKeys({ workspaceId: values.workspace, pageSize: 1000 }, auth),
      );
      return 0;
    }
    if (command === "admin-key" && sub === "revoke") {
      const id = positionals[0];
      if (!id) throw new UsageError("name the key id to revoke");
      print(RevokeAdminKeyResponseSchema, await admin.revokeAdminKey({ adminKeyId: id }, auth));
      return 0;
    }
    if (command === "provision-user") {
      if (!values.email) throw new UsageError("--email is required");
      const role = { member: Role.MEMBER, admin: Role.ADMIN, owner: Role.OWNER }[
        values.role ?? "member"
      ];
      if (role === undefined) throw new UsageError("--role is member, admin or owner");
      const res = await admin.provisionUser(
        {
          email: values.email,
          password: values.password,
          emailVerified: values.verified,
          workspaceId: values.workspace,
          role,
        },
        auth,
      );
      print(ProvisionUserResponseSchema, res);
      return 0;
    }
    if (command === "keys" && sub === "rotate") {
      print(
        RotateSigningKeyResponseSchema,
        await admin.rotateSigningKey({ algorithm: values.algorithm }, auth),
      );
      return 0;
    }
    if (command === "keys" && sub === "revoke") {
      const kid = positionals[0];
      if (!kid) throw new UsageError("name the kid of the signing key to revoke");
      print(RevokeSigningKeyResponseSchema, await admin.revokeSigningKey({ kid }, auth));
      return 0;
    }
    if (command === "keys" && sub === "list") {
      print(ListSigningKeysResponseSchema, await admin.listSigningKeys({}, auth));
      return 0;
    }
    throw new UsageError(`unknown command: ${argv.join(" ")}`);
  } catch (error) {
    if (
      error instanceof UsageError ||
      (error as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION"
    ) {
      console.error(`${(error as Error).message}\n\n${adminUsage}`);
      return 2;
    }
    if (error instanceof ConnectError) {
      const reason = error.findDetails(ErrorInfoSchema)[0]?.reason;
      console.error(`${Code[error.code]}${reason ? ` (${reason})` : ""}: ${error.rawMessage}`);
      return 1;
    }
    throw error;
  }
}
