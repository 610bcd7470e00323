import net from "node:net";

/** Small helpers every suite uses to make its data and its calls. */

let sequence = 0;

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
