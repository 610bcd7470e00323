import { adminCommands, adminUsage, runAdminCommand } from "./cli-admin.js";
import { deploymentKeyUsage, runDeploymentKeyCommand } from "./cli-deployment-key.js";
import { ConfigError, configFromEnv } from "./config.js";
import { loadMigrations, migrate } from "./db/migrate.js";
import { openDatabase } from "./db/pool.js";
import { createLogger, serviceLogDestination } from "./log.js";
import { databaseStartupError, exitCodes, StartupError } from "./startup-failure.js";

const usage = `Usage: keygate <command>

Commands:
  serve     Start the service (embedded PostgreSQL when DATABASE_URL is unset)
  migrate   Apply pending database migrations and exit

Configuration comes from KEYGATE_* environment variables and DATABASE_URL (see docs/configuration.md).

${adminUsage}
${deploymentKeyUsage}

A start that fails for a reason to fix prints one line saying what to do and exits with its
own code (65 migrations missing, 66 no such database, 69 database unreachable, 73 service port,
74 metrics port, 77 database credentials, 78 configuration; see docs/operations.md).`;

async function main(argv: string[]): Promise<number> {
  const command = argv[0];
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    console.log(usage);
    return command === undefined ? 2 : 0;
  }
  // Straight against the database: the way to a first key when no server or key is at hand.
  if (command === "admin-key" && argv[1] === "create" && argv.includes("--deployment"))
    return runDeploymentKeyCommand(argv.slice(2), process.env);
  if (adminCommands.has(command)) return runAdminCommand(argv, process.env);
  let config: ReturnType<typeof configFromEnv>;
  try {
    config = configFromEnv(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return exitCodes.config;
    }
    throw error;
  }
  const logger = createLogger(config.logLevel, serviceLogDestination());
  try {
    return await run(command, config, logger);
  } catch (error) {
    // One line that says what to do, not a driver's stack, for what an operator can fix.
    const failure = error instanceof StartupError ? error : databaseStartupError(error, config);
    if (!failure) throw error;
    console.error(failure.message);
    return failure.exitCode;
  }
}

async function run(
  command: string,
  config: ReturnType<typeof configFromEnv>,
  logger: ReturnType<typeof createLogger>,
): Promise<number> {
  if (command === "migrate") {
    const database = await openDatabase(config);
    try {
      const applied = await migrate(
        database.embedded ? database.url : (config.directDatabaseUrl ?? database.url),
        await loadMigrations(),
      );
      logger.info(
        { migrations: applied.map((m) => m.name) },
        applied.length ? "migrations applied" : "database is up to date",
      );
      return 0;
    } finally {
      await database.close();
    }
  }

  if (command === "serve") {
    // Listen for stop signals before starting, so one that arrives during start-up still
    // ends in a graceful stop rather than the default kill.
    const stopSignal = new Promise<string>((resolve) => {
      process.once("SIGTERM", () => resolve("SIGTERM"));
      process.once("SIGINT", () => resolve("SIGINT"));
    });
    const { startKeygate } = await import("./app.js");
    const keygate = await startKeygate(config, logger);
    if (keygate.bootstrapped) {
      const b = keygate.bootstrapped;
      // Printed once, to the terminal rather than the log stream: it is a credential. Only
      // now, on a start that has bound its listeners: a failed start creates no key.
      process.stdout.write(
        `\nFirst start: created workspace "${b.workspaceSlug}" (${b.workspaceId}) and a deployment admin key.\n` +
          `Store it now, it is not shown again:\n\n  ${b.adminKey}\n\n`,
      );
    }
    logger.info({ signal: await stopSignal }, "shutting down");
    await keygate.close();
    logger.info("stopped");
    return 0;
  }

  console.error(`Unknown command: ${command}\n\n${usage}`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
    process.exit(1);
  },
);
