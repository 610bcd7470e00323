import { mkdir } from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

export interface EmbeddedPostgres {
  /** A postgres:// URL on loopback that the ordinary driver and pool connect to. */
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * PostgreSQL compiled to WebAssembly (PGlite), persisted under `dataDir`, served over the
 * PostgreSQL wire protocol on a loopback port. The service then talks to it through the same
 * pg driver and Slonik pool as to an external server, so there is one SQL dialect and one code
 * path. pglite-socket multiplexes the connections onto PGlite's single backend and keeps a
 * transaction's statements together, so transactions on different pool connections are
 * serialised rather than interleaved; `syncedBackend` extends that to the messages of one
 * extended-protocol query outside a transaction.
 */
export async function startEmbeddedPostgres(options: {
  dataDir: string;
  maxConnections: number;
}): Promise<EmbeddedPostgres> {
  const dir = path.resolve(options.dataDir, "pgdata");
  await mkdir(dir, { recursive: true });
  const db = await PGlite.create(dir);
  const server = new PGLiteSocketServer({
    db: syncedBackend(db),
    host: "127.0.0.1",
    port: 0,
    maxConnections: options.maxConnections,
  });
  await server.start();
  return {
    url: `postgres://postgres@${server.getServerConn()}/postgres`,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}

/** Extended-protocol messages that leave a query open until the client's Sync. */
const openingMessages = new Set(["P", "B", "D", "E", "C", "H"].map((c) => c.charCodeAt(0)));

/**
 * PGlite as pglite-socket's queue should see it. The queue hands the backend to one
 * connection at a time per message, and keeps it with that connection only while a
 * transaction is open. A query outside a transaction is several messages (Parse, Bind,
 * Describe, Execute, Sync): another connection's query or transaction run between them
 * replaces the unnamed statement, and the first query then fails or answers with another's
 * rows. Reporting "in a transaction" from a connection's Parse until its Sync makes the queue
 * keep the backend with that connection for the whole query.
 */
function syncedBackend(db: PGlite): PGlite {
  let open = false;
  return new Proxy(db, {
    get(target, property) {
      if (property === "isInTransaction") return () => open || target.isInTransaction();
      if (property === "execProtocolRawStream")
        return (message: Uint8Array, options: Parameters<PGlite["execProtocolRawStream"]>[1]) => {
          open = message.length > 0 && openingMessages.has(message[0] as number);
          return target.execProtocolRawStream(message, options);
        };
      if (property === "exec")
        // Only the queue's ROLLBACK for a connection that went away comes this way.
        return (query: string) => {
          open = false;
          return target.exec(query);
        };
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
