import type { ParseArgsConfig } from "node:util";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { createClient } from "@connectrpc/connect";
import type { AdminService } from "../gen/keygate/v1/admin_service_pb.js";

/** What the admin commands (cli-admin-commands.ts) get from the runner (cli-admin.ts). */

export const defaultUrl = "http://127.0.0.1:8080";

export type AdminClient = ReturnType<typeof createClient<typeof AdminService>>;
export type Options = NonNullable<ParseArgsConfig["options"]>;
export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** What a command gets: the server is reached only when the command asks for it. */
export interface CommandContext {
  readonly values: Values;
  readonly positionals: string[];
  readonly env: Record<string, string | undefined>;
  /** The AdminService client with the admin key; fails with exit 78 when there is none. */
  admin(): { client: AdminClient; call: { headers: Record<string, string> } };
  /**
   * A workspace id from a UUID or a slug; "" when `value` is empty, unless the command needs
   * one: then the only workspace the key can see, or a usage error.
   */
  workspace(value: string | undefined, options?: { required: boolean }): Promise<string>;
  /** A user id from a UUID or an email address. */
  user(value: string | undefined, what?: string): Promise<string>;
  print<D extends DescMessage>(schema: D, message: MessageShape<D>): void;
}

export interface Command {
  /** Arguments after the command name, as the usage line shows them. */
  readonly args: string;
  readonly summary: string;
  readonly options?: Options;
  run(ctx: CommandContext): Promise<void>;
}

/** A group is a top-level word (`users`); "" names a group that is itself the command. */
export type CommandGroup = Readonly<Record<string, Command>>;

export class UsageError extends Error {}
/** A problem of the environment (no admin key): exit 78, EX_CONFIG. */
export class ConfigProblem extends Error {}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string) => uuidPattern.test(value);
