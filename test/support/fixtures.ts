/** Small helpers every suite uses to make its data and its calls. */
import net from "node:net";
import type { Client } from "@connectrpc/connect";
import type { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import type { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import type { Role, Tokens } from "../../gen/keygate/v1/types_pb.js";

let sequence = 0;

/** The password of every user the suites make. */
export const password = "correct horse battery staple";

/** An address no other test in this run has used (unique across files and instances). */
export function uniqueEmail(tag: string): string {
  return `${tag}-${process.pid}-${Date.now()}-${++sequence}@example.test`;
}

/** Call options that send `token` as the bearer credential. */
export function bearer(token: string): { headers: { authorization: string } } {
  return { headers: { authorization: `Bearer ${token}` } };
}

/** A loopback port nothing listens on now, for a server whose URL is configured before it starts. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** What provisions users and logs them in: clients of one instance and an admin key for it. */
export interface Provisioner {
  admin: Client<typeof AdminService>;
  auth: Client<typeof AuthService>;
  adminKey: string;
  /** Where users are made unless a call names another workspace. */
  workspaceId: string;
}

/** A user with `password`, provisioned by the admin key and logged in once. */
export async function signedIn(
  by: Provisioner,
  tag: string,
  options: { workspaceId?: string; role?: Role; emailVerified?: boolean } = {},
): Promise<Tokens & { email: string }> {
  const { workspaceId = by.workspaceId, ...rest } = options;
  const email = uniqueEmail(tag);
  await by.admin.provisionUser({ email, password, workspaceId, ...rest }, bearer(by.adminKey));
  const res = await by.auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  return { email, ...res.result.value };
}
