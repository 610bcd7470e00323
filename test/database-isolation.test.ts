import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { configFromEnv } from "../src/config.js";
import { type Database, openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import {
  externalDatabaseEnv,
  freshDatabaseUrl,
  usingExternalPostgres,
} from "./support/database.js";

// Runs on the embedded PGlite by default, where several pool connections share one backend
// through pglite-socket, and on PostgreSQL with TEST_DATABASE_URL.
let database: Database;
let dataDir: string;
let drop: () => Promise<void>;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), "keygate-isolation-"));
  const db = await freshDatabaseUrl();
  drop = db.drop;
  database = await openDatabase(
    configFromEnv({
      KEYGATE_DATA_DIR: dataDir,
      ...externalDatabaseEnv(db.url),
      KEYGATE_DB_POOL_SIZE: "6",
    }),
  );
  await database.pool.query(sql.unsafe`CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)`);
});
afterAll(async () => {
  await database?.close();
  await drop?.();
  await rm(dataDir, { recursive: true, force: true });
});

const count = z.object({ count: z.number() });

describe(`transactions on different pool connections (${usingExternalPostgres ? "PostgreSQL" : "embedded PGlite"})`, () => {
  it("do not see each other's uncommitted writes", async () => {
    let inserted!: () => void;
    const insertedSignal = new Promise<void>((resolve) => {
      inserted = resolve;
    });
    const writer = database.pool
      .transaction(async (tx) => {
        await tx.query(sql.unsafe`INSERT INTO counters (id, n) VALUES (100, 1)`);
        inserted();
        await sleep(200);
        throw new Error("roll back");
      })
      .catch((e: Error) => e.message);
    await insertedSignal;
    const seen = await database.pool.oneFirst(
      sql.type(count)`SELECT count(*)::int AS count FROM counters WHERE id = 100`,
    );
    expect(seen).toBe(0);
    expect(await writer).toBe("roll back");
    expect(
      await database.pool.oneFirst(
        sql.type(count)`SELECT count(*)::int AS count FROM counters WHERE id = 100`,
      ),
    ).toBe(0);
  });

  it("lose no update when they increment one row together", async () => {
    await database.pool.query(sql.unsafe`INSERT INTO counters (id, n) VALUES (1, 0)`);
    await Promise.all(
      Array.from({ length: 12 }, () =>
        database.pool.transaction(async (tx) => {
          const n = await tx.oneFirst(
            sql.type(z.object({ n: z.number() }))`SELECT n FROM counters WHERE id = 1 FOR UPDATE`,
          );
          await sleep(5);
          await tx.query(sql.unsafe`UPDATE counters SET n = ${n + 1} WHERE id = 1`);
        }),
      ),
    );
    expect(
      await database.pool.oneFirst(
        sql.type(z.object({ n: z.number() }))`SELECT n FROM counters WHERE id = 1`,
      ),
    ).toBe(12);
  });

  it("keep their own SET LOCAL settings", async () => {
    const read = (value: string) =>
      database.pool.transaction(async (tx) => {
        await tx.query(sql.unsafe`SELECT set_config('keygate.probe', ${value}, true)`);
        await sleep(20);
        return tx.oneFirst(
          sql.type(z.object({ v: z.string() }))`SELECT current_setting('keygate.probe') AS v`,
        );
      });
    const values = ["a", "b", "c", "d", "e", "f"];
    expect(await Promise.all(values.map(read))).toEqual(values);
    // And the setting does not outlive its transaction on the connection.
    const after = await database.pool.oneFirst(
      sql.type(
        z.object({ v: z.string().nullable() }),
      )`SELECT current_setting('keygate.probe', true) AS v`,
    );
    expect(after === null || after === "").toBe(true);
  });
});

describe(`statements outside transactions on different pool connections (${usingExternalPostgres ? "PostgreSQL" : "embedded PGlite"})`, () => {
  it("each get their own answer when many run at once, between transactions", async () => {
    // Each is a Parse/Bind/Execute/Sync sequence; a transaction or another statement run on
    // the one backend in the middle of it would replace its unnamed statement.
    const values = Array.from({ length: 60 }, (_, i) => i);
    const probe = z.object({ v: z.number() });
    const answers = await Promise.all(
      values.map((i) =>
        i % 3 === 0
          ? database.pool.transaction(async (tx) => {
              await tx.query(sql.unsafe`SELECT set_config('keygate.probe', ${String(i)}, true)`);
              return tx.oneFirst(sql.type(probe)`SELECT ${i}::int AS v`);
            })
          : database.pool.oneFirst(
              sql.type(probe)`SELECT ${i}::int + 0 * length(${"x".repeat(i)}) AS v`,
            ),
      ),
    );
    expect(answers).toEqual(values);
  });
});
