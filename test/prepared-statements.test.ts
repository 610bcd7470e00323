import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Database, openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import { freshDatabaseUrl, usingExternalPostgres } from "./support/database.js";

/**
 * sql.prepared statements are named prepared statements only where each pool connection is a
 * session of its own (db/pool.ts): behind a transaction pooler, or on the embedded PGlite
 * whose connections share one session, a name prepared by one connection would be unknown to
 * the next server session, or taken already, so they run unnamed.
 */
const probe = () => sql.prepared("keygate_probe", z.object({ n: z.number() }))`SELECT 1 AS n`;
const preparedRow = z.object({ count: z.number() });
const preparedHere = (db: Database) =>
  db.pool.oneFirst(sql.type(preparedRow)`
    SELECT count(*)::int AS count FROM pg_prepared_statements WHERE name = 'keygate_probe'`);

describe.runIf(usingExternalPostgres)("named statements on PostgreSQL", () => {
  let url: string;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    const fresh = await freshDatabaseUrl();
    url = fresh.url as string;
    drop = fresh.drop;
  });
  afterAll(() => drop());

  it("are prepared once on a connection that is its own session", async () => {
    const db = await openDatabase({
      databaseUrl: url,
      directDatabaseUrl: url,
      dbPoolSize: 1,
      dataDir: "",
    });
    try {
      expect(await db.pool.oneFirst(probe())).toBe(1);
      expect(await db.pool.oneFirst(probe())).toBe(1);
      expect(await preparedHere(db)).toBe(1);
    } finally {
      await db.close();
    }
  });

  it("run unnamed behind a pooler (another direct address) or when none is named", async () => {
    const direct = new URL(url);
    direct.searchParams.set("application_name", "keygate-direct");
    for (const directDatabaseUrl of [direct.toString(), undefined]) {
      const db = await openDatabase({
        databaseUrl: url,
        directDatabaseUrl,
        dbPoolSize: 1,
        dataDir: "",
      });
      try {
        expect(await db.pool.oneFirst(probe())).toBe(1);
        expect(await preparedHere(db)).toBe(0);
      } finally {
        await db.close();
      }
    }
  });
});

describe.skipIf(usingExternalPostgres)("named statements on the embedded PGlite", () => {
  let dataDir: string;
  let db: Database;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "keygate-prepared-"));
    db = await openDatabase({ databaseUrl: undefined, dbPoolSize: 4, dataDir });
  });
  afterAll(async () => {
    await db.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("run unnamed: connections sharing the one session never collide on a name", async () => {
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => db.pool.transaction((tx) => tx.oneFirst(probe()))),
    );
    expect(answers).toEqual(Array(8).fill(1));
    expect(await preparedHere(db)).toBe(0);
  });
});
