import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import type { DatabasePool } from "slonik";
import { z } from "zod";
import { sha256Hex, sql } from "./sql.js";

const presentRow = z.object({ present: z.boolean() });

export const defaultMigrationsDir = fileURLToPath(new URL("../../migrations/", import.meta.url));

/** NNN_<module>_<domain>_<action>.sql */
const fileName = /^(\d{3})_([a-z0-9]+)_([a-z0-9_]+)_([a-z0-9]+)\.sql$/;

// Any constant works as long as every instance uses the same one: "keygate" in ASCII.
const migrationLockKey = 0x6b657967617465n;

export interface Migration {
  readonly version: string;
  readonly name: string;
  readonly checksum: string;
  readonly text: string;
}

export class MigrationError extends Error {
  override name = "MigrationError";
}

export async function loadMigrations(dir = defaultMigrationsDir): Promise<Migration[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith(".sql")).sort();
  const migrations: Migration[] = [];
  for (const name of names) {
    const match = fileName.exec(name);
    if (!match) {
      throw new MigrationError(
        `migration file ${name} is not named NNN_<module>_<domain>_<action>.sql`,
      );
    }
    const version = match[1] as string;
    if (migrations.some((m) => m.version === version)) {
      throw new MigrationError(`two migration files share the number ${version}`);
    }
    const text = await readFile(path.join(dir, name), "utf8");
    migrations.push({ version, name: name.slice(0, -4), checksum: sha256Hex(text), text });
  }
  return migrations;
}

const appliedRow = z.object({ version: z.string(), name: z.string(), checksum: z.string() });

/**
 * The migrations this code knows that the database has not applied yet. Throws when an
 * applied migration was edited afterwards, or the database holds one this code does not know
 * of under a different name.
 */
export async function pendingMigrations(
  pool: Pick<DatabasePool, "any">,
  migrations: readonly Migration[],
): Promise<Migration[]> {
  const applied = await pool.any(
    sql.type(appliedRow)`
      SELECT version, name, checksum FROM schema_migrations ORDER BY version`,
  );
  return checkApplied(applied, migrations);
}

function checkApplied(
  applied: readonly z.infer<typeof appliedRow>[],
  migrations: readonly Migration[],
): Migration[] {
  const byVersion = new Map(applied.map((row) => [row.version, row]));
  for (const migration of migrations) {
    const row = byVersion.get(migration.version);
    if (row === undefined) continue;
    if (row.name !== migration.name || row.checksum !== migration.checksum) {
      throw new MigrationError(
        `migration ${migration.name} was changed after it was applied ` +
          `(database has ${row.name} with checksum ${row.checksum.slice(0, 12)}, ` +
          `the file has ${migration.checksum.slice(0, 12)}); restore the file and add a new migration instead`,
      );
    }
  }
  return migrations.filter((m) => !byVersion.has(m.version));
}

/**
 * Applies the pending migrations in order, each in its own transaction, on a dedicated
 * connection of the plain pg driver: migration files are scripts of several statements,
 * which Slonik deliberately refuses. Instances starting at the same time serialise on a
 * session advisory lock, so each migration runs once.
 */
export function migrate(
  databaseUrl: string,
  migrations: readonly Migration[],
): Promise<Migration[]> {
  // The embedded database has a single backend that every connection shares, so its session
  // advisory locks never block: runs in this process also queue behind each other here.
  const previous = inProcessRuns.get(databaseUrl) ?? Promise.resolve();
  const run = previous.catch(() => {}).then(() => migrateLocked(databaseUrl, migrations));
  inProcessRuns.set(databaseUrl, run);
  return run;
}

const inProcessRuns = new Map<string, Promise<unknown>>();

async function migrateLocked(
  databaseUrl: string,
  migrations: readonly Migration[],
): Promise<Migration[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query("SELECT pg_advisory_lock($1)", [migrationLockKey.toString()]);
    await client.query(`
      CREATE TABLE IF NOT EXISTS schema_migrations (
        version text PRIMARY KEY,
        name text NOT NULL,
        checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
    const { rows } = await client.query("SELECT version, name, checksum FROM schema_migrations");
    const pending = checkApplied(z.array(appliedRow).parse(rows), migrations);
    for (const migration of pending) {
      await client.query("BEGIN");
      try {
        await client.query(migration.text);
        await client.query(
          "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
          [migration.version, migration.name, migration.checksum],
        );
        await client.query("COMMIT");
      } catch (error) {
        await client.query("ROLLBACK");
        throw new MigrationError(
          `migration ${migration.name} failed: ${(error as Error).message}`,
          {
            cause: error,
          },
        );
      }
    }
    return pending;
  } finally {
    await client.end();
  }
}

/** True when every known migration is applied; false when the table or a migration is missing. */
export async function migrationsCurrent(
  pool: Pick<DatabasePool, "any" | "maybeOne">,
  migrations: readonly Migration[],
): Promise<boolean> {
  return (await missingMigrations(pool, migrations)).length === 0;
}

/** The known migrations not applied yet: all of them on a database never migrated. */
export async function missingMigrations(
  pool: Pick<DatabasePool, "any" | "maybeOne">,
  migrations: readonly Migration[],
): Promise<Migration[]> {
  const exists = await pool.maybeOne(
    sql.type(presentRow)`
      SELECT to_regclass('schema_migrations') IS NOT NULL AS present`,
  );
  if (!exists?.present) return [...migrations];
  return pendingMigrations(pool, migrations);
}
