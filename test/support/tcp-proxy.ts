import net from "node:net";

/**
 * A loopback TCP proxy whose link can be cut and restored, to take a database away from a
 * running service without stopping the database: cut() drops every open connection and
 * refuses new ones; restore() accepts again on the same port. switchTo() points the same port
 * at another server, the way a managed database's endpoint moves at failover: open connections
 * drop, new ones reach the new target.
 */
export async function startTcpProxy(initial: { host: string; port: number }) {
  let target = initial;
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  let port = 0;

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = net.createServer((client) => {
        const upstream = net.connect(target.port, target.host);
        for (const socket of [client, upstream]) {
          sockets.add(socket);
          socket.on("close", () => sockets.delete(socket));
          socket.on("error", () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.pipe(upstream).pipe(client);
      });
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => {
        port = (s.address() as net.AddressInfo).port;
        server = s;
        resolve();
      });
    });

  await listen();
  return {
    get port() {
      return port;
    },
    async cut() {
      const s = server;
      server = undefined;
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => (s ? s.close(() => resolve()) : resolve()));
    },
    async restore() {
      if (!server) await listen();
    },
    switchTo(next: { host: string; port: number }) {
      target = next;
      for (const socket of sockets) socket.destroy();
    },
    async stop() {
      await this.cut();
    },
  };
}

/** The same URL with its host and port replaced by the proxy's. */
export function throughProxy(url: string, proxyPort: number): string {
  const u = new URL(url);
  u.hostname = "127.0.0.1";
  u.port = String(proxyPort);
  return u.toString();
}
