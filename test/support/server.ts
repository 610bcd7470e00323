import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Keygate, startKeygate } from "../../src/app.js";
import type { Clock } from "../../src/clock.js";
import { type Config, configFromEnv } from "../../src/config.js";
import { createLogger } from "../../src/log.js";
import { externalDatabaseEnv, freshDatabaseUrl } from "./database.js";

export interface TestKeygate extends Keygate {
  readonly config: Config;
  readonly dataDir: string;
  stop(): Promise<void>;
}

/** A real Keygate on an ephemeral loopback port, with its own database and data directory. */
export async function startTestKeygate(
  env: Record<string, string> = {},
  options: { clock?: Clock } = {},
): Promise<TestKeygate> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-test-"));
  const db = await freshDatabaseUrl();
  const config = configFromEnv({
    KEYGATE_PORT: "0",
    KEYGATE_DATA_DIR: dataDir,
    KEYGATE_LOG_LEVEL: process.env.KEYGATE_TEST_LOG_LEVEL ?? "silent",
    KEYGATE_MIGRATE_ON_START: "true",
    KEYGATE_SHUTDOWN_TIMEOUT_MS: "2000",
    ...externalDatabaseEnv(db.url),
    ...env,
  });
  const keygate = await startKeygate(config, createLogger(config.logLevel), options);
  let stopped = false;
  return Object.assign(Object.create(keygate) as Keygate, keygate, {
    config,
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
