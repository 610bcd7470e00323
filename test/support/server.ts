import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { DestinationStream } from "pino";
import { type Keygate, startKeygate } from "../../src/app.js";
import type { Clock } from "../../src/clock.js";
import { type Config, configFromEnv, rateLimitNames } from "../../src/config.js";
import { loadSecrets } from "../../src/crypto/secrets.js";
import { createLogger, type Logger } from "../../src/log.js";
import { externalDatabaseEnv, freshDatabaseUrl, withMailSettings } from "./database.js";

export interface TestKeygate extends Keygate {
  readonly config: Config;
  /** The environment the configuration was parsed from. */
  readonly env: Record<string, string | undefined>;
  readonly dataDir: string;
  stop(): Promise<void>;
}

/** A real Keygate on an ephemeral loopback port, with its own database and data directory. */
/**
 * A second instance on the first one's database (its embedded server's URL, or the same
 * PostgreSQL) with the same secrets, as a second replica would run.
 */
export async function startPeerKeygate(
  first: TestKeygate,
  env: Record<string, string> = {},
  options: { clock?: Clock } = {},
): Promise<TestKeygate> {
  const secrets = await loadSecrets(first.config);
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-peer-"));
  let config: Config;
  let keygate: Keygate;
  try {
    config = configFromEnv(
      withMailSettings({
        ...first.env,
        KEYGATE_DATA_DIR: dataDir,
        DATABASE_URL: first.database.url,
        KEYGATE_KEY_ENCRYPTION_KEY: secrets.keyEncryptionKey.toString("base64"),
        KEYGATE_TOKEN_SECRET: secrets.tokenSecret.toString("base64"),
        KEYGATE_ISSUER: first.config.issuer,
        KEYGATE_MAIL_DEV_OUTBOX: "true",
        KEYGATE_MIGRATE_ON_START: "false",
        ...env,
      }),
    );
    keygate = await startKeygate(config, createLogger(config.logLevel), options);
  } catch (error) {
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  return Object.assign(Object.create(keygate) as Keygate, keygate, {
    config,
    env: first.env,
    dataDir,
    async stop() {
      await keygate.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  });
}

/**
 * The environment of a test instance: ephemeral ports, its own data directory and database,
 * quiet logs and limits far above what a suite does, then the suite's own settings.
 */
export function testEnv(
  dataDir: string,
  databaseUrl: string | undefined,
  env: Record<string, string>,
): Record<string, string | undefined> {
  return withMailSettings({
    KEYGATE_PORT: "0",
    KEYGATE_METRICS_PORT: "0",
    KEYGATE_DATA_DIR: dataDir,
    KEYGATE_LOG_LEVEL: process.env.KEYGATE_TEST_LOG_LEVEL ?? "silent",
    KEYGATE_MIGRATE_ON_START: "true",
    KEYGATE_SHUTDOWN_TIMEOUT_MS: "2000",
    // Suites that are not about rate limits log in far more often than a person would;
    // test/rate-limits.test.ts runs with the real defaults.
    KEYGATE_RATE_LIMITS: JSON.stringify(
      Object.fromEntries(rateLimitNames.map((n) => [n, { limit: 100_000, window_seconds: 60 }])),
    ),
    KEYGATE_LOCKOUT_THRESHOLD: "1000",
    ...externalDatabaseEnv(databaseUrl),
    ...env,
  });
}

export async function startTestKeygate(
  env: Record<string, string> = {},
  options: { clock?: Clock; webAppDir?: string; logTo?: DestinationStream; logger?: Logger } = {},
): Promise<TestKeygate> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-test-"));
  const db = await freshDatabaseUrl();
  const fullEnv = testEnv(dataDir, db.url, env);
  const config = configFromEnv(fullEnv);
  const logger =
    options.logger ??
    (options.logTo ? createLogger("info", options.logTo) : createLogger(config.logLevel));
  let keygate: Keygate;
  try {
    keygate = await startKeygate(config, logger, options);
  } catch (error) {
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  let stopped = false;
  return Object.assign(Object.create(keygate) as Keygate, keygate, {
    config,
    env: fullEnv,
    dataDir,
    async stop() {
      if (stopped) return;
      stopped = true;
      await keygate.close();
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  });
}
