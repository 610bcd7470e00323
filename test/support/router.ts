import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createRouterTransport, type Interceptor, type Transport } from "@connectrpc/connect";
import { composeKeygate } from "../../src/app.js";
import { CallLog } from "../../src/call-log.js";
import type { Clock } from "../../src/clock.js";
import { type Config, configFromEnv } from "../../src/config.js";
import { requestIdKey, requestMetaKey } from "../../src/context-keys.js";
import type { Database } from "../../src/db/pool.js";
import { type BootstrapResult, bootstrap } from "../../src/domain/bootstrap.js";
import { createLogger } from "../../src/log.js";
import { routes } from "../../src/routes.js";
import { rpcRouterOptions } from "../../src/server.js";
import { freshDatabaseUrl } from "./database.js";
import { testEnv } from "./server.js";

export interface RouterKeygate {
  /** Calls go straight to the router: no socket, no HTTP, no listener. */
  readonly transport: Transport;
  readonly config: Config;
  readonly database: Database;
  /** The default workspace and its admin key. */
  readonly bootstrapped: BootstrapResult;
  stop(): Promise<void>;
}

/**
 * What the listener takes from the socket and the headers for every call (buildServer), from
 * the headers alone: the in-memory transport has no socket, so no peer and no client address.
 */
const requestContext: Interceptor = (next) => (req) => {
  const requestId = req.header.get("x-request-id") ?? randomUUID();
  req.contextValues.set(requestIdKey, requestId).set(requestMetaKey, {
    requestId,
    ipAddress: null,
    userAgent: req.header.get("user-agent"),
    workspaceHeader: req.header.get("x-workspace-id") || null,
  });
  return next(req);
};

/**
 * Keygate's routes with the real handlers behind the real interceptors, over
 * createRouterTransport, on a database of its own (PGlite unless TEST_DATABASE_URL is set).
 */
export async function startRouterKeygate(
  env: Record<string, string> = {},
  options: { clock?: Clock } = {},
): Promise<RouterKeygate> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-router-"));
  const db = await freshDatabaseUrl();
  const cleanUp = async () => {
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  };
  const config = configFromEnv(testEnv(dataDir, db.url, env));
  const logger = createLogger(config.logLevel);
  const services = await composeKeygate(config, logger, options).catch(async (error) => {
    await cleanUp();
    throw error;
  });
  const callLog = new CallLog(logger, { sampleEvery: config.logSampleEvery });
  services.stops.add("call log", () => callLog.close());
  const stop = async () => {
    await services.stops.stopAll(true);
    await cleanUp();
  };
  try {
    const bootstrapped = await bootstrap(services.database.pool);
    if (!bootstrapped) throw new Error("the fresh database had been bootstrapped already");
    const router = rpcRouterOptions(services.server, callLog);
    const transport = createRouterTransport(routes(services.server.handlers), {
      router: { ...router, interceptors: [requestContext, ...router.interceptors] },
    });
    return { transport, config, database: services.database, bootstrapped, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
