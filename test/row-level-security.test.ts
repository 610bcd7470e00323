import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { configFromEnv } from "../src/config.js";
import { loadMigrations, migrate } from "../src/db/migrate.js";
import { type Database, openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import { asService, tenantRole, withTenant } from "../src/db/with-tenant.js";
import { externalDatabaseEnv, freshDatabaseUrl } from "./support/database.js";

let database: Database;
let dataDir: string;
let drop: () => Promise<void>;
let a: string;
let b: string;

const id = z.object({ id: z.string() });

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), "keygate-rls-"));
  const db = await freshDatabaseUrl();
  drop = db.drop;
  database = await openDatabase(
    configFromEnv({ KEYGATE_DATA_DIR: dataDir, ...externalDatabaseEnv(db.url) }),
  );
  await migrate(database.url, await loadMigrations());
  const pool = database.pool;
  a = await pool.oneFirst(
    sql.type(id)`INSERT INTO workspaces (name, slug) VALUES ('A', 'rls-a') RETURNING id`,
  );
  b = await pool.oneFirst(
    sql.type(id)`INSERT INTO workspaces (name, slug) VALUES ('B', 'rls-b') RETURNING id`,
  );
  const user = await pool.oneFirst(sql.type(id)`
    INSERT INTO users (email, email_normalized) VALUES ('rls@example.test', 'rls@example.test') RETURNING id`);
  for (const ws of [a, b, b]) {
    await pool.query(sql.unsafe`
      INSERT INTO sessions (workspace_id, user_id, created_at, last_used_at, idle_expires_at, expires_at)
      VALUES (${ws}, ${user}, now(), now(), now() + interval '1 day', now() + interval '2 days')`);
  }
});
afterAll(async () => {
  await database?.close();
  await drop?.();
  await rm(dataDir, { recursive: true, force: true });
});

describe("SECURITY.md 20: row-level security behind the workspace predicate", () => {
  it("a query that forgets its workspace predicate sees only the transaction's workspace", async () => {
    const seen = await withTenant(database.pool, a, (tx) =>
      tx.anyFirst(
        sql.type(z.object({ workspace_id: z.string() }))`SELECT workspace_id FROM sessions`,
      ),
    );
    expect(seen).toEqual([a]);
    const workspaces = await withTenant(database.pool, b, (tx) =>
      tx.anyFirst(sql.type(id)`SELECT id FROM workspaces`),
    );
    expect(workspaces).toEqual([b]);
  });

  it("updates and deletes cannot reach another workspace's rows, and inserts cannot create them", async () => {
    const changed = await withTenant(database.pool, a, async (tx) => {
      const updated = await tx.query(
        sql.unsafe`UPDATE sessions SET revoke_reason = 'x' WHERE workspace_id = ${b}`,
      );
      const deleted = await tx.query(sql.unsafe`DELETE FROM sessions WHERE workspace_id = ${b}`);
      return updated.rowCount + deleted.rowCount;
    });
    expect(changed).toBe(0);
    const insert = withTenant(database.pool, a, (tx) =>
      tx.query(sql.unsafe`
        INSERT INTO audit_events (workspace_id, type, outcome) VALUES (${b}, 'probe', 'success')`),
    );
    await expect(insert).rejects.toThrow(/row-level security/);
    expect(
      await database.pool.oneFirst(sql.type(z.object({ n: z.number() }))`
        SELECT count(*)::int AS n FROM sessions WHERE workspace_id = ${b}`),
    ).toBe(2);
  });

  it("without a workspace set, the tenant role sees nothing", async () => {
    const seen = await withTenant(database.pool, "", (tx) =>
      tx.anyFirst(sql.type(id)`SELECT id FROM sessions`),
    );
    expect(seen).toEqual([]);
  });

  it("the tenant role is neither owner, superuser nor BYPASSRLS; every tenant table forces RLS", async () => {
    const role = await withTenant(database.pool, a, (tx) =>
      tx.one(sql.type(
        z.object({ user: z.string(), super: z.boolean(), bypass: z.boolean(), owns: z.number() }),
      )`
        SELECT current_user AS user, r.rolsuper AS super, r.rolbypassrls AS bypass,
               (SELECT count(*)::int FROM pg_tables WHERE tableowner = current_user) AS owns
        FROM pg_roles r WHERE r.rolname = current_user`),
    );
    expect(role).toEqual({ user: "keygate_tenant", super: false, bypass: false, owns: 0 });
    const tables = await database.pool.any(sql.type(
      z.object({ relname: z.string(), rls: z.boolean(), forced: z.boolean() }),
    )`
      SELECT relname, relrowsecurity AS rls, relforcerowsecurity AS forced FROM pg_class
      WHERE relname IN ('workspaces', 'workspace_members', 'sessions', 'refresh_tokens', 'one_time_codes',
                        'audit_events', 'mail_outbox', 'admin_keys') AND relkind = 'r'
      ORDER BY relname`);
    expect(tables).toHaveLength(8);
    for (const t of tables) expect(t, t.relname).toMatchObject({ rls: true, forced: true });
  });
});

describe("the audit log", () => {
  it("is append-only, for the tenant role and the service role alike", async () => {
    await database.pool.query(sql.unsafe`
      INSERT INTO audit_events (workspace_id, type, outcome) VALUES (${a}, 'probe', 'success')`);
    await expect(
      database.pool.query(
        sql.unsafe`UPDATE audit_events SET type = 'changed' WHERE type = 'probe'`,
      ),
    ).rejects.toThrow(/append-only/);
    await expect(
      database.pool.query(sql.unsafe`DELETE FROM audit_events WHERE type = 'probe'`),
    ).rejects.toThrow(/append-only/);
    await expect(
      withTenant(database.pool, a, (tx) =>
        tx.query(sql.unsafe`DELETE FROM audit_events WHERE type = 'probe'`),
      ),
    ).rejects.toThrow(/permission denied|append-only/);
    expect(
      await database.pool.oneFirst(sql.type(z.object({ n: z.number() }))`
        SELECT count(*)::int AS n FROM audit_events WHERE type = 'probe'`),
    ).toBe(1);
  });
});

describe("pooled connections", () => {
  it("carry no workspace or role from one transaction into the next call, so none is reset", async () => {
    // One connection, so every call below is on the same backend (the pid says so).
    const one = await openDatabase({ databaseUrl: database.url, dbPoolSize: 1, dataDir });
    try {
      const state = sql.type(
        z.object({ pid: z.number(), workspace: z.string().nullable(), role: z.string() }),
      )`
        SELECT pg_backend_pid() AS pid, current_user::text AS role,
               NULLIF(current_setting('keygate.workspace_id', true), '') AS workspace`;
      const outside = await one.pool.one(state);
      expect(outside.workspace).toBeNull();
      const inside = await withTenant(one.pool, a, (tx) => tx.one(state));
      expect(inside).toEqual({ pid: outside.pid, workspace: a, role: tenantRole });
      expect(await one.pool.one(state)).toEqual(outside);
      await expect(
        withTenant(one.pool, b, async (tx) => {
          await tx.one(state);
          throw new Error("rolled back");
        }),
      ).rejects.toThrow("rolled back");
      // (Slonik may replace a connection whose transaction failed; either way nothing is left.)
      const after = await one.pool.one(state);
      expect(after).toEqual({ ...outside, pid: after.pid });
      const asServiceRole = await withTenant(one.pool, a, (tx) =>
        asService(tx, () => tx.one(state)),
      );
      expect(asServiceRole).toEqual({ ...after, workspace: a });
      expect(await one.pool.one(state)).toEqual(after);
    } finally {
      await one.close();
    }
  });
});
