import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { configFromEnv } from "../src/config.js";
import {
  defaultMigrationsDir,
  loadMigrations,
  MigrationError,
  migrate,
  migrationsCurrent,
} from "../src/db/migrate.js";
import { type Database, openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import { externalDatabaseEnv, freshDatabaseUrl } from "./support/database.js";

let database: Database;
let dataDir: string;
let drop: () => Promise<void>;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), "keygate-migrate-"));
  const db = await freshDatabaseUrl();
  drop = db.drop;
  database = await openDatabase(
    configFromEnv({ KEYGATE_DATA_DIR: dataDir, ...externalDatabaseEnv(db.url) }),
  );
});
afterAll(async () => {
  await database?.close();
  await drop?.();
  await rm(dataDir, { recursive: true, force: true });
});

async function copyOfMigrations(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "keygate-migrations-"));
  await cp(defaultMigrationsDir, dir, { recursive: true });
  return dir;
}

describe("migrations", () => {
  it("apply in order once, also when several instances start together", async () => {
    const migrations = await loadMigrations();
    expect(migrations.length).toBeGreaterThan(0);
    expect(await migrationsCurrent(database.pool, migrations)).toBe(false);

    const runs = await Promise.all([1, 2, 3].map(() => migrate(database.url, migrations)));
    // Exactly one run applied each migration; the others found nothing to do.
    expect(runs.flat().map((m) => m.version)).toEqual(migrations.map((m) => m.version));

    const rows = await database.pool.any(
      sql.type(
        z.object({ version: z.string() }),
      )`SELECT version FROM schema_migrations ORDER BY version`,
    );
    expect(rows.map((r) => r.version)).toEqual(migrations.map((m) => m.version));
    expect(await migrationsCurrent(database.pool, migrations)).toBe(true);
    expect(await migrate(database.url, migrations)).toEqual([]);
  });

  it("a new migration file is pending until applied", async () => {
    const dir = await copyOfMigrations();
    await writeFile(
      path.join(dir, "900_test_probe_create.sql"),
      "CREATE TABLE migration_probe (id int);\n",
    );
    const migrations = await loadMigrations(dir);
    expect(await migrationsCurrent(database.pool, migrations)).toBe(false);
    const applied = await migrate(database.url, migrations);
    expect(applied.map((m) => m.name)).toEqual(["900_test_probe_create"]);
    expect(await migrationsCurrent(database.pool, migrations)).toBe(true);
    await rm(dir, { recursive: true });
  });

  it("an applied migration that was edited stops the start with a clear error", async () => {
    const dir = await copyOfMigrations();
    await writeFile(
      path.join(dir, "900_test_probe_create.sql"),
      "CREATE TABLE migration_probe (id bigint);\n",
    );
    const migrations = await loadMigrations(dir);
    const error = await migrate(database.url, migrations).catch((e) => e);
    expect(error).toBeInstanceOf(MigrationError);
    expect((error as Error).message).toMatch(
      /900_test_probe_create was changed after it was applied/,
    );
    await expect(migrationsCurrent(database.pool, migrations)).rejects.toThrow(MigrationError);
    await rm(dir, { recursive: true });
  });

  it("a failing migration leaves nothing half-applied", async () => {
    const dir = await copyOfMigrations();
    await writeFile(
      path.join(dir, "900_test_probe_create.sql"),
      "CREATE TABLE migration_probe (id int);\n",
    );
    await writeFile(
      path.join(dir, "901_test_broken_create.sql"),
      "CREATE TABLE half_applied (id int);\nSELECT no_such_function();\n",
    );
    const error = await migrate(database.url, await loadMigrations(dir)).catch((e) => e);
    expect(error).toBeInstanceOf(MigrationError);
    expect((error as Error).message).toContain("901_test_broken_create");
    const exists = await database.pool.oneFirst(
      sql.type(
        z.object({ present: z.boolean() }),
      )`SELECT to_regclass('half_applied') IS NOT NULL AS present`,
    );
    expect(exists).toBe(false);
    await rm(dir, { recursive: true });
  });

  it("refuses files that do not follow NNN_<module>_<domain>_<action>.sql", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "keygate-migrations-"));
    await writeFile(path.join(dir, "1_users.sql"), "SELECT 1;");
    await expect(loadMigrations(dir)).rejects.toThrow(
      /is not named NNN_<module>_<domain>_<action>\.sql/,
    );
    await rm(dir, { recursive: true });
  });
});
