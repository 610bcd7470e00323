import { createPool, type DatabasePool } from "slonik";
import type { Config } from "../config.js";
import { startEmbeddedPostgres } from "./embedded.js";

export interface Database {
  readonly pool: DatabasePool;
  /** The URL the pool connects to (the embedded server's loopback URL in embedded mode). */
  readonly url: string;
  readonly embedded: boolean;
  close(): Promise<void>;
}

/** Opens the configured PostgreSQL, or starts the embedded one when DATABASE_URL is unset. */
export async function openDatabase(config: Config): Promise<Database> {
  const embedded =
    config.databaseUrl === undefined
      ? await startEmbeddedPostgres({
          dataDir: config.dataDir,
          // Room beyond the pool for the migrator's and the listener's own connections.
          maxConnections: config.dbPoolSize + 4,
        })
      : undefined;
  const url = embedded?.url ?? (config.databaseUrl as string);
  try {
    const pool = await createPool(url, {
      maxPoolSize: config.dbPoolSize,
      connectionTimeout: 5_000,
      statementTimeout: 15_000,
      idleInTransactionSessionTimeout: 15_000,
      // A failed statement is an answer to the caller, not something to repeat blindly.
      queryRetryLimit: 0,
      transactionRetryLimit: 0,
      captureStackTrace: false,
    });
    return {
      pool,
      url,
      embedded: embedded !== undefined,
      async close() {
        await pool.end();
        await embedded?.stop();
      },
    };
  } catch (error) {
    await embedded?.stop();
    throw error;
  }
}
