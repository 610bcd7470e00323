import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Role } from "../gen/keygate/v1/types_pb.js";
import { type CommandContext, UsageError, type Values } from "./cli-admin-context.js";

// What the admin commands share in reading their arguments and options and in paging.

export const str = (values: Values, name: string) => {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
};

export const ws = { workspace: { type: "string" } } as const;

const roles = { owner: Role.OWNER, admin: Role.ADMIN, member: Role.MEMBER } as const;
export function role(value: string | undefined, fallback?: keyof typeof roles): Role {
  const r = roles[(value ?? fallback ?? "") as keyof typeof roles];
  if (r === undefined) throw new UsageError("--role is owner, admin or member");
  return r;
}

export function time(value: string | undefined, option: string) {
  if (!value) return undefined;
  const ms = new Date(value).getTime();
  if (Number.isNaN(ms)) throw new UsageError(`${option} is not a time (use ISO 8601)`);
  return timestampFromMs(ms);
}

export function positional(ctx: CommandContext, what: string): string {
  const value = ctx.positionals[0];
  if (!value) throw new UsageError(`name the ${what}`);
  return value;
}

/** Every page of a list call, in one answer. */
export async function allPages<T>(
  page: (token: string) => Promise<{ items: T[]; next: string }>,
): Promise<T[]> {
  const out: T[] = [];
  let token = "";
  do {
    const { items, next } = await page(token);
    out.push(...items);
    token = next;
  } while (token !== "");
  return out;
}
