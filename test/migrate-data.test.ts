import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { configFromEnv } from "../src/config.js";
import { loadMigrations, migrate } from "../src/db/migrate.js";
import { type Database, openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import { externalDatabaseEnv, freshDatabaseUrl } from "./support/database.js";

// Migrations that move existing data, each run on a database of its own that holds rows of
// the schema before it.
const cleanups: (() => Promise<void>)[] = [];

async function freshDatabase(): Promise<Database> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-migrate-data-"));
  const db = await freshDatabaseUrl();
  const database = await openDatabase(
    configFromEnv({ KEYGATE_DATA_DIR: dataDir, ...externalDatabaseEnv(db.url) }),
  );
  cleanups.push(async () => {
    await database.close();
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  });
  return database;
}
afterAll(async () => {
  for (const cleanup of cleanups) await cleanup();
});

const id = z.object({ id: z.string() });

const keyRow = z.object({
  name: z.string(),
  created_by_user_id: z.string().nullable(),
  revoked: z.boolean(),
  expires_in_days: z.number().nullable(),
});

describe("migration 017: admin keys bound to the user who minted them", () => {
  it("names each key's minting user through its lineage, revokes keys of users that are gone, and bounds their lifetime", async () => {
    const database = await freshDatabase();
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

describe("migration 021: each workspace's own view of a shared account", () => {
  it("gives every membership a copy of the account's metadata, keeps the account's, and allows invitations", async () => {
    const database = await freshDatabase();
    const all = await loadMigrations();
    await migrate(
      database.url,
      all.filter((m) => m.version < "021"),
    );
    const pool = database.pool;
    const user = async (email: string, metadata: Record<string, unknown>) =>
      pool.oneFirst(sql.type(id)`
        INSERT INTO users (email, email_normalized, metadata)
        VALUES (${email}, ${email}, ${sql.jsonb(metadata as never)}) RETURNING id`);
    const workspace = async (slug: string) =>
      pool.oneFirst(sql.type(id)`
        INSERT INTO workspaces (name, slug) VALUES (${slug}, ${slug}) RETURNING id`);
    const shared = await user("shared@example.test", { plan: "gold", tags: ["a"] });
    const plain = await user("plain@example.test", {});
    const [w1, w2] = [await workspace("one"), await workspace("two")];
    const pairs: [string, string][] = [
      [w1, shared],
      [w2, shared],
      [w1, plain],
    ];
    for (const [w, u] of pairs)
      await pool.query(sql.unsafe`
        INSERT INTO workspace_members (workspace_id, user_id, role) VALUES (${w}, ${u}, 'member')`);

    await migrate(database.url, all);
    const rows = await pool.any(
      sql.type(
        z.object({ workspace_id: z.string(), user_id: z.string(), metadata: z.unknown() }),
      )`SELECT workspace_id, user_id, metadata FROM workspace_members`,
    );
    const of = (w: string, u: string) =>
      rows.find((r) => r.workspace_id === w && r.user_id === u)?.metadata;
    expect(of(w1, shared)).toEqual({ plan: "gold", tags: ["a"] });
    expect(of(w2, shared)).toEqual({ plan: "gold", tags: ["a"] });
    expect(of(w1, plain)).toEqual({});
    // The account keeps its own object (the deployment admin's).
    expect(
      await pool.oneFirst(sql.type(z.object({ metadata: z.unknown() }))`
        SELECT metadata FROM users WHERE id = ${shared}`),
    ).toEqual({ plan: "gold", tags: ["a"] });
    // A membership may now be an invitation, and nothing else new.
    await pool.query(sql.unsafe`
      UPDATE workspace_members SET status = 'invited' WHERE workspace_id = ${w2} AND user_id = ${shared}`);
    await expect(
      pool.query(sql.unsafe`
        UPDATE workspace_members SET status = 'pending' WHERE workspace_id = ${w1} AND user_id = ${plain}`),
    ).rejects.toThrow(/check/i);
  });
});
