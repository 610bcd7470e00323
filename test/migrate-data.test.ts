import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { configFromEnv } from "../src/config.js";
import { loadMigrations, migrate } from "../src/db/migrate.js";
import { type Database, openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import { externalDatabaseEnv, freshDatabaseUrl } from "./support/database.js";

// Migrations that move existing data, run on a database that holds rows of the schema before.
let database: Database;
let dataDir: string;
let drop: () => Promise<void>;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), "keygate-migrate-data-"));
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

const keyRow = z.object({
  name: z.string(),
  created_by_user_id: z.string().nullable(),
  revoked: z.boolean(),
  expires_in_days: z.number().nullable(),
});

describe("migration 017: admin keys bound to the user who minted them", () => {
  it("names each key's minting user through its lineage, revokes keys of users that are gone, and bounds their lifetime", async () => {
    const all = await loadMigrations();
    await migrate(
      database.url,
      all.filter((m) => m.version < "017"),
    );
    const pool = database.pool;
    const user = await pool.oneFirst(sql.type(z.object({ id: z.string() }))`
      INSERT INTO users (email, email_normalized) VALUES ('a@example.test', 'a@example.test')
      RETURNING id`);
    const workspace = await pool.oneFirst(sql.type(z.object({ id: z.string() }))`
      INSERT INTO workspaces (name, slug) VALUES ('W', 'w') RETURNING id`);
    const key = async (name: string, createdBy: string) =>
      pool.oneFirst(sql.type(z.object({ id: z.string() }))`
        INSERT INTO admin_keys (workspace_id, name, prefix, secret_hash, role, created_by)
        VALUES (${workspace}, ${name}, ${`kg_${name}`.padEnd(11, "x")},
                ${sql.binary(Buffer.alloc(32))}, 'admin', ${createdBy})
        RETURNING id`);
    const parent = await key("parent", `user:${user}`);
    const child = await key("child", `admin_key:${parent}`);
    await key("grandchild", `admin_key:${child}`);
    await key("orphan", "user:00000000-0000-4000-8000-000000000000");
    await key("bootkey", "bootstrap");

    await migrate(database.url, all);
    const rows = await pool.any(sql.type(keyRow)`
      SELECT name, created_by_user_id, revoked_at IS NOT NULL AS revoked,
             (extract(epoch FROM expires_at - now()) / 86400)::float8 AS expires_in_days
      FROM admin_keys ORDER BY name`);
    const byName = Object.fromEntries(rows.map((r) => [r.name, r]));
    for (const name of ["parent", "child", "grandchild"]) {
      expect(byName[name]?.created_by_user_id, name).toBe(user);
      expect(byName[name]?.revoked, name).toBe(false);
      expect(byName[name]?.expires_in_days, name).toBeGreaterThan(89.9);
      expect(byName[name]?.expires_in_days, name).toBeLessThanOrEqual(90);
    }
    expect(byName.orphan).toMatchObject({ created_by_user_id: null, revoked: true });
    expect(byName.bootkey).toMatchObject({
      created_by_user_id: null,
      revoked: false,
      expires_in_days: null,
    });
  });
});
