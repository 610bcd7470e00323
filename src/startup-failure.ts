import type { Config } from "./config.js";
import { MigrationError } from "./db/migrate.js";

/**
 * Exit codes of a start that fails for a reason an operator can fix, one per reason, so that a
 * supervisor (or a person reading `echo $?`) can tell them apart. sysexits.h where one fits.
 * docs/operations.md has the table; anything else exits 1 with its stack.
 */
export const exitCodes = Object.freeze({
  /** A migration is missing, or an applied one was edited (EX_DATAERR). */
  migrationsPending: 65,
  /** The database named in DATABASE_URL does not exist (EX_NOINPUT). */
  databaseMissing: 66,
  /** Nothing answers at the database's address, or it did not answer in time (EX_UNAVAILABLE). */
  databaseUnreachable: 69,
  /** The service port is taken or not ours to bind (EX_CANTCREAT). */
  servicePortUnavailable: 73,
  /** The metrics port is taken or not ours to bind (EX_IOERR). */
  metricsPortUnavailable: 74,
  /** The database refused the user or password (EX_NOPERM). */
  databaseAuthentication: 77,
  /** Invalid configuration (EX_CONFIG). */
  config: 78,
});

/** A start that cannot go on, with the one line that says what to do and the exit code. */
export class StartupError extends Error {
  override name = "StartupError";
  constructor(
    message: string,
    readonly exitCode: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The codes found along an error's cause chain (pg and Node put them on different levels). */
function codesOf(error: unknown): string[] {
  const codes: string[] = [];
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current && typeof current === "object" && !seen.has(current)) {
    seen.add(current);
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") codes.push(code);
    const errors = (current as { errors?: unknown }).errors;
    // AggregateError: a host name that resolves to several addresses, each refused.
    if (Array.isArray(errors)) for (const e of errors) codes.push(...codesOf(e));
    current = (current as { cause?: unknown }).cause;
  }
  return codes;
}

/** host:port/database of the configured database, never its password. */
export function describeDatabase(config: Pick<Config, "databaseUrl">): string {
  if (config.databaseUrl === undefined) return "the embedded database";
  try {
    const url = new URL(config.databaseUrl);
    return `${url.hostname}:${url.port || "5432"}${url.pathname}`;
  } catch {
    return "DATABASE_URL";
  }
}

/**
 * The StartupError for a failure while opening, checking or migrating the database; undefined
 * for anything else (a bug, which keeps its stack).
 */
export function databaseStartupError(
  error: unknown,
  config: Pick<Config, "databaseUrl">,
): StartupError | undefined {
  if (error instanceof StartupError) return error;
  const where = describeDatabase(config);
  if (error instanceof MigrationError) {
    return new StartupError(`${error.message}`, exitCodes.migrationsPending, { cause: error });
  }
  const codes = codesOf(error);
  if (
    codes.some((c) =>
      [
        "ECONNREFUSED",
        "ENOTFOUND",
        "EAI_AGAIN",
        "ETIMEDOUT",
        "EHOSTUNREACH",
        "ENETUNREACH",
      ].includes(c),
    )
  ) {
    return new StartupError(
      `database unreachable at ${where}: start PostgreSQL there, or point DATABASE_URL at a running server`,
      exitCodes.databaseUnreachable,
      { cause: error },
    );
  }
  if (codes.includes("3D000")) {
    const name = where.slice(where.indexOf("/") + 1);
    return new StartupError(
      `database "${name}" does not exist at ${where.slice(0, where.indexOf("/"))}: create it (createdb ${name}), or fix the name in DATABASE_URL`,
      exitCodes.databaseMissing,
      { cause: error },
    );
  }
  if (codes.includes("28P01") || codes.includes("28000")) {
    return new StartupError(
      `database at ${where} refused the user or password in DATABASE_URL: fix them, or grant the user access`,
      exitCodes.databaseAuthentication,
      { cause: error },
    );
  }
  if (codes.includes("42P01")) {
    // A table the code needs is missing: the schema was never migrated.
    return migrationsPendingError(where, "the schema is missing");
  }
  return undefined;
}

export function migrationsPendingError(where: string, what: string): StartupError {
  return new StartupError(
    `database at ${where} is not migrated (${what}): run \`keygate migrate\` with the same DATABASE_URL, or set KEYGATE_MIGRATE_ON_START=true`,
    exitCodes.migrationsPending,
  );
}

/** The StartupError for a listener that could not bind. */
export function listenStartupError(
  error: unknown,
  which: "service" | "metrics",
  host: string,
  port: number,
): StartupError | undefined {
  const codes = codesOf(error);
  const variable = which === "service" ? "KEYGATE_PORT" : "KEYGATE_METRICS_PORT";
  const hostVariable = which === "service" ? "KEYGATE_HOST" : "KEYGATE_METRICS_HOST";
  const exitCode =
    which === "service" ? exitCodes.servicePortUnavailable : exitCodes.metricsPortUnavailable;
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  const extra = which === "metrics" ? " (or KEYGATE_METRICS=false)" : "";
  if (codes.includes("EADDRINUSE")) {
    return new StartupError(
      `${which} port ${where} is in use: stop the process that holds it, or set ${variable} to a free port${extra}`,
      exitCode,
      { cause: error },
    );
  }
  if (codes.includes("EACCES")) {
    return new StartupError(
      `${which} port ${where} may not be bound by this user: pick a port above 1023 in ${variable}${extra}`,
      exitCode,
      { cause: error },
    );
  }
  if (codes.includes("EADDRNOTAVAIL")) {
    return new StartupError(
      `${which} address ${where} is not an address of this machine: fix ${hostVariable}`,
      exitCode,
      { cause: error },
    );
  }
  return undefined;
}
