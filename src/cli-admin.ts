import { parseArgs } from "node:util";
import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { adminCommandGroups } from "./cli-admin-commands.js";
import {
  type Command,
  type CommandContext,
  ConfigProblem,
  defaultUrl,
  isUuid,
  UsageError,
} from "./cli-admin-context.js";

/**
 * `keygate <group> <command> ...`: AdminService over Connect for an operator's tasks, answers
 * printed as JSON. The command table is in cli-admin-commands.ts; this file parses, helps and
 * connects.
 */

const line = (group: string, sub: string, c: Command) =>
  `  keygate ${[group, sub, c.args].filter(Boolean).join(" ")}\n      ${c.summary}`;

function groupUsage(group: string): string {
  const commands = adminCommandGroups[group] ?? {};
  return Object.entries(commands)
    .map(([sub, c]) => line(group, sub, c))
    .join("\n");
}

export const adminUsage = `Admin commands talk to a running Keygate at KEYGATE_URL (${defaultUrl} when unset,
said on stderr) with the admin key in KEYGATE_ADMIN_KEY, and print the answer as JSON.
--workspace takes a workspace id or slug; USER takes a user id or email address. Roles are
owner, admin or member. \`keygate <group> --help\` lists a group's commands.

${Object.keys(adminCommandGroups).map(groupUsage).join("\n")}`;

export const adminCommands = new Set(Object.keys(adminCommandGroups));

const wantsHelp = (args: string[]) => args.some((a) => a === "--help" || a === "-h");

export async function runAdminCommand(
  argv: string[],
  env: Record<string, string | undefined>,
): Promise<number> {
  const [group = "", ...rest] = argv;
  const commands = adminCommandGroups[group];
  if (!commands) throw new Error(`not an admin command group: ${group}`);
  const single = "" in commands;
  const sub = single ? "" : (rest[0] ?? "");
  const command = commands[sub];
  const args = single ? rest : rest.slice(1);

  if (!single && (sub === "" || sub === "help" || sub === "--help" || sub === "-h")) {
    console.log(`Usage:\n${groupUsage(group)}`);
    return sub === "" ? 2 : 0;
  }
  if (!command) {
    console.error(
      `keygate ${group} has no command "${sub}"; its commands are: ${Object.keys(commands).join(", ")}\n\nUsage:\n${groupUsage(group)}`,
    );
    return 2;
  }
  if (wantsHelp(args)) {
    console.log(`Usage:\n${line(group, sub, command)}`);
    return 0;
  }

  let connected: ReturnType<CommandContext["admin"]> | undefined;
  const admin = () => {
    if (connected) return connected;
    const key = env.KEYGATE_ADMIN_KEY;
    if (!key)
      throw new ConfigProblem("KEYGATE_ADMIN_KEY is not set: the admin commands need an admin key");
    if (!env.KEYGATE_URL) console.error(`KEYGATE_URL is not set: using ${defaultUrl}`);
    const client = createClient(
      AdminService,
      createConnectTransport({ baseUrl: env.KEYGATE_URL || defaultUrl, httpVersion: "1.1" }),
    );
    connected = { client, call: { headers: { authorization: `Bearer ${key}` } } };
    return connected;
  };

  const name = `keygate ${[group, sub].filter(Boolean).join(" ")}`;
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: command.options ?? {},
    });
    await command.run({
      values,
      positionals,
      env,
      admin,
      print(schema, message) {
        // Implicit values too: a script reads "created": false, not a missing key.
        process.stdout.write(
          `${toJsonString(schema, message, { prettySpaces: 2, alwaysEmitImplicit: true })}\n`,
        );
      },
      async workspace(value, options) {
        if (!value && options?.required) {
          const { client, call } = admin();
          const { workspaces } = await client.listWorkspaces({ pageSize: 2 }, call);
          if (workspaces.length === 1 && workspaces[0]) return workspaces[0].id;
          throw new UsageError(
            "--workspace is required: the key sees several workspaces (keygate workspaces list shows them)",
          );
        }
        if (!value || isUuid(value)) return value ?? "";
        const { client, call } = admin();
        const { workspaces } = await client.listWorkspaces(
          { slugPrefix: value, pageSize: 1000 },
          call,
        );
        const found = workspaces.find((w) => w.slug === value);
        if (!found)
          throw new UsageError(
            `no workspace has the id or slug "${value}" (keygate workspaces list shows them)`,
          );
        return found.id;
      },
      async user(value, what = "USER") {
        if (!value) throw new UsageError(`name the ${what} (a user id or email address)`);
        if (isUuid(value)) return value;
        if (!value.includes("@"))
          throw new UsageError(`${what} "${value}" is neither a user id nor an email address`);
        const { client, call } = admin();
        const { users } = await client.listUsers({ emailPrefix: value, pageSize: 1000 }, call);
        const found = users.find((u) => u.email.toLowerCase() === value.toLowerCase());
        if (!found) throw new UsageError(`no user has the email address ${value}`);
        return found.id;
      },
    });
    return 0;
  } catch (error) {
    if (error instanceof ConfigProblem) {
      console.error(error.message);
      return 78;
    }
    const code = (error as { code?: string }).code;
    if (
      error instanceof UsageError ||
      code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" ||
      code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE" ||
      code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL"
    ) {
      console.error(`${name}: ${(error as Error).message}\n\nUsage:\n${line(group, sub, command)}`);
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
