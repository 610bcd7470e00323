import type { AddressInfo } from "node:net";
import type { Config } from "./config.js";
import { defaultMigrationsDir, loadMigrations, migrate } from "./db/migrate.js";
import { type Database, openDatabase } from "./db/pool.js";
import { type BootstrapResult, bootstrap } from "./domain/bootstrap.js";
import { HealthService } from "./handlers/health.js";
import type { JwksSource } from "./http/endpoints.js";
import type { Logger } from "./log.js";
import { createMailer, type Mailer } from "./mail/mailer.js";
import { Readiness } from "./readiness.js";
import { keygateServices } from "./routes.js";
import { buildServer } from "./server.js";

export interface Keygate {
  readonly address: AddressInfo;
  /** http(s)://host:port of the listener. */
  readonly url: string;
  readonly database: Database;
  readonly mailer: Mailer;
  /** Set on the first start only: the default workspace and its admin key in clear. */
  readonly bootstrapped: BootstrapResult | undefined;
  /** Graceful stop: readiness 503, new calls refused, in-flight calls drained, pool closed. */
  close(): Promise<void>;
}

/** Opens the database, migrates when configured, bootstraps, and listens. */
export async function startKeygate(
  config: Config,
  logger: Logger,
  options: { migrationsDir?: string; mailer?: Mailer } = {},
): Promise<Keygate> {
  const migrations = await loadMigrations(options.migrationsDir ?? defaultMigrationsDir);
  const database = await openDatabase(config);
  try {
    if (config.migrateOnStart) {
      const applied = await migrate(database.url, migrations);
      if (applied.length > 0)
        logger.info({ migrations: applied.map((m) => m.name) }, "migrations applied");
    }
    const bootstrapped = config.bootstrap ? await bootstrap(database.pool) : undefined;
    const readiness = new Readiness(database.pool, migrations, logger);
    const mailer = options.mailer ?? createMailer(config, logger);
    // Signing keys arrive with AuthService; until then the set is empty.
    const jwks: JwksSource = { jwks: async () => ({ keys: [] }) };
    const server = buildServer({
      config,
      logger,
      readiness,
      jwks,
      handlers: {
        health: new HealthService(readiness, new Set(keygateServices.map((s) => s.typeName))),
        auth: {},
        otp: {},
        admin: {},
        introspection: {},
      },
    });
    const address = await server.listen(config.port, config.host);
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    const url = `${config.tls ? "https" : "http"}://${host}:${address.port}`;
    logger.info({ url, embedded: database.embedded }, "keygate listening");
    return {
      address,
      url,
      database,
      mailer,
      bootstrapped,
      async close() {
        await server.close(config.shutdownTimeoutMs);
        mailer.close();
        await database.close();
      },
    };
  } catch (error) {
    await database.close();
    throw error;
  }
}
