import { createPool, type DatabasePool, type Interceptor, SchemaValidationError } from "slonik";
import type { Config } from "../config.js";
import { startEmbeddedPostgres } from "./embedded.js";

export interface Database {
  readonly pool: DatabasePool;
  /** The URL the pool connects to (the embedded server's loopback URL in embedded mode). */
  readonly url: string;
  readonly embedded: boolean;
  close(): Promise<void>;
}

/**
 * Validates every row of a `sql.type(schema)` query against its schema (Slonik leaves this to
 * an interceptor), so a mismatch between SQL and code fails loudly instead of passing wrong
 * data along.
 */
const resultParser: Interceptor = {
  name: "keygate-result-parser",
  transformRowAsync: async (context, query, row) => {
    const parser = context.resultParser;
    if (!parser) return row;
    const result = await parser["~standard"].validate(row);
    if (result.issues) throw new SchemaValidationError(query, row, result.issues);
    return result.value as typeof row;
  },
};

/** Opens the configured PostgreSQL, or starts the embedded one when DATABASE_URL is unset. */
export async function openDatabase(
  config: Pick<Config, "databaseUrl" | "dbPoolSize" | "dataDir">,
): Promise<Database> {
  const embedded =
    config.databaseUrl === undefined
      ? await startEmbeddedPostgres({
          dataDir: config.dataDir,
          // Room beyond the pool for the migrator, tools such as `keygate migrate`, and the
          // instances that tests start on this database (each a pool and a listener).
          maxConnections: config.dbPoolSize + 100,
        })
      : undefined;
  const url = embedded?.url ?? (config.databaseUrl as string);
  try {
    const pool = await createPool(url, {
      maxPoolSize: config.dbPoolSize,
      connectionTimeout: 5_000,
      statementTimeout: 15_000,
      idleInTransactionSessionTimeout: 15_000,
      // A failed statement is an answer to the caller, not something to repeat blindly. Slonik
      // also destroys the connection it failed on, so one that reached a server refusing writes
      // (a standby, a demoted primary: SQLSTATE 25006) is replaced by the next call's.
      queryRetryLimit: 0,
      transactionRetryLimit: 0,
      captureStackTrace: false,
      // Keygate keeps no session state on a pooled connection (tenant and role are set with
      // set_config(..., true), which ends with the transaction), so the DISCARD ALL Slonik
      // sends on every release would only add a round trip to each query.
      resetConnection: async () => {},
      interceptors: [resultParser],
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
