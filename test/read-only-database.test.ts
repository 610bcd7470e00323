import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { Role } from "../gen/keygate/v1/types_pb.js";
import { usingExternalPostgres } from "./support/database.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { until } from "./support/wait.js";

/**
 * A database that only reads, as the address of a failing-over PostgreSQL reaches for a moment
 * (the standby before its promotion, the demoted primary after it). Made here with
 * default_transaction_read_only on the database: new sessions refuse writes with SQLSTATE 25006
 * exactly as a hot standby does. PostgreSQL only (the embedded database has one session).
 */
describe.runIf(usingExternalPostgres)("a database that refuses writes", () => {
  const poolSize = 3;
  let keygate: TestKeygate;
  let admin: ReturnType<typeof createClient<typeof AdminService>>;
  let root: { headers: Record<string, string> };
  let workspaceId: string;
  let counter = 0;

  const database = () => new URL(keygate.database.url).pathname.slice(1);
  async function asSuperuser(text: string) {
    const client = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
    await client.connect();
    try {
      await client.query(text);
    } finally {
      await client.end();
    }
  }
  const write = () =>
    admin
      .provisionUser(
        { email: `ro-${Date.now()}-${++counter}@example.test`, workspaceId, role: Role.MEMBER },
        root,
      )
      .then(
        () => "ok",
        (e) => Code[ConnectError.from(e).code] as string,
      );

  beforeAll(async () => {
    keygate = await startTestKeygate({ KEYGATE_DB_POOL_SIZE: String(poolSize) });
    admin = createClient(
      AdminService,
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
    );
    root = { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } };
    workspaceId = keygate.bootstrapped?.workspaceId as string;
  });
  afterAll(async () => {
    await asSuperuser(`ALTER DATABASE ${database()} RESET default_transaction_read_only`).catch(
      () => {},
    );
    await keygate?.stop();
  });

  it("answers UNAVAILABLE, reports not ready, and replaces its connections when writes return", async () => {
    expect(await write()).toBe("ok");
    await asSuperuser(`ALTER DATABASE ${database()} SET default_transaction_read_only = on`);
    // Sessions take the setting when they start: end the pool's, so it opens read-only ones.
    await asSuperuser(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
       WHERE datname = '${database()}' AND pid <> pg_backend_pid()`,
    );
    await until(async () => (await fetch(`${keygate.url}/readyz`)).status === 503, 10_000);
    const body = await (await fetch(`${keygate.url}/readyz`)).json();
    expect(body).toMatchObject({ status: "not_ready", reason: "database_read_only" });
    const refused: string[] = [];
    for (let i = 0; i < 2 * poolSize; i++) refused.push(await write());
    // Never INTERNAL: the read-only error (SQLSTATE 25006) is the database being unavailable.
    expect(new Set(refused)).toEqual(new Set(["Unavailable"]));

    // Fill the pool with read-only sessions: concurrent reads keep every connection busy.
    await Promise.all(
      Array.from({ length: 3 * poolSize }, () =>
        admin.listUsers({ workspaceId }, root).catch(() => {}),
      ),
    );
    await asSuperuser(`ALTER DATABASE ${database()} RESET default_transaction_read_only`);
    // The pool's sessions are still read-only; each one that meets a refused write is replaced,
    // so writes come back after at most one refusal per pooled connection, and stay back once
    // every connection has met one.
    // Writes poolSize at a time keep every pooled connection busy, so each meets a write.
    const after: string[] = [];
    for (let round = 0; round < 3; round++)
      after.push(...(await Promise.all(Array.from({ length: poolSize }, () => write()))));
    const refusedAfter = after.filter((o) => o !== "ok");
    expect(refusedAfter.every((o) => o === "Unavailable")).toBe(true);
    expect(refusedAfter.length).toBeLessThanOrEqual(poolSize);
    for (let i = 0; i < 2 * poolSize; i++) expect(await write()).toBe("ok");
    console.log("writes refused after the database took writes again:", refusedAfter.length);
    await until(async () => (await fetch(`${keygate.url}/readyz`)).status === 200, 10_000);
  });
});
