import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { type EmbeddedPostgres, startEmbeddedPostgres } from "../src/db/embedded.js";
import { exitCodes } from "../src/startup-failure.js";
import { freshDatabaseUrl, usingExternalPostgres } from "./support/database.js";
import { freePort } from "./support/wait.js";

const root = path.resolve(import.meta.dirname, "..");
const bin = path.join(root, "bin/keygate.mjs");

interface Exited {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `keygate ...` to its end (or until the "listening" line, then SIGTERM). */
function keygate(
  args: string[],
  env: Record<string, string>,
  options: { stopWhenListening?: boolean } = {},
): Promise<Exited & { url?: string }> {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", KEYGATE_PORT: "0", KEYGATE_METRICS_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  let url: string | undefined;
  child.stdout.on("data", (c: Buffer) => {
    stdout += c.toString();
    const match = /"url":"(http:\/\/[^"]+)".*"msg":"keygate listening"/.exec(stdout);
    if (match && url === undefined && options.stopWhenListening) {
      url = match[1];
      child.kill("SIGTERM");
    }
  });
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  return new Promise((resolve) =>
    child.once("exit", (code) => resolve({ code, stdout, stderr, url })),
  );
}

/** Holds a TCP port on loopback, as another process would. */
async function holdPort(): Promise<{ port: number; release(): Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    release: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const secrets = () => ({
  KEYGATE_KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
  KEYGATE_TOKEN_SECRET: randomBytes(32).toString("base64"),
  KEYGATE_ISSUER: "http://127.0.0.1:0",
  KEYGATE_MAIL_DEV_OUTBOX: "true",
});

/**
 * An external database for this file: a fresh one on TEST_DATABASE_URL's server, or else an
 * embedded PGlite served over the wire protocol as any PostgreSQL would be.
 */
async function externalDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const fresh = await freshDatabaseUrl();
  if (fresh.url) return { url: fresh.url, drop: fresh.drop };
  const dir = await mkdtemp(path.join(tmpdir(), "keygate-startup-db-"));
  const embedded: EmbeddedPostgres = await startEmbeddedPostgres({
    dataDir: dir,
    maxConnections: 50,
  });
  return {
    url: embedded.url,
    async drop() {
      await embedded.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function countRows(url: string, table: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query(`SELECT count(*)::int AS n FROM ${table}`);
    return rows[0].n as number;
  } finally {
    await client.end();
  }
}

const oneLine = (text: string) => text.trim().split("\n");

describe("start-up failures: one line saying what to do, an exit code of their own", {
  timeout: 90_000,
}, () => {
  it("a closed database port", async () => {
    const port = await freePort();
    const run = await keygate(["serve"], {
      DATABASE_URL: `postgres://keygate@127.0.0.1:${port}/keygate`,
      ...secrets(),
    });
    expect(run.code).toBe(exitCodes.databaseUnreachable);
    expect(oneLine(run.stderr)).toEqual([
      `database unreachable at 127.0.0.1:${port}/keygate: start PostgreSQL there, or point DATABASE_URL at a running server`,
    ]);
  });

  it("a closed database port for `keygate migrate` too", async () => {
    const port = await freePort();
    const run = await keygate(["migrate"], {
      DATABASE_URL: `postgres://keygate@127.0.0.1:${port}/keygate`,
      ...secrets(),
    });
    expect(run.code).toBe(exitCodes.databaseUnreachable);
    expect(oneLine(run.stderr)).toHaveLength(1);
  });

  if (usingExternalPostgres) {
    // PGlite has one database and answers to any name; a missing one takes a real server.
    it("a database that does not exist", async () => {
      const url = new URL(process.env.TEST_DATABASE_URL as string);
      const name = `keygate_missing_${randomBytes(4).toString("hex")}`;
      url.pathname = `/${name}`;
      const run = await keygate(["serve"], { DATABASE_URL: url.toString(), ...secrets() });
      expect(run.code).toBe(exitCodes.databaseMissing);
      expect(oneLine(run.stderr)).toEqual([
        `database "${name}" does not exist at ${url.hostname}:${url.port || "5432"}: create it (createdb ${name}), or fix the name in DATABASE_URL`,
      ]);
    });
  }

  describe("an external database that was never migrated", () => {
    let db: Awaited<ReturnType<typeof externalDatabase>>;
    beforeAll(async () => {
      db = await externalDatabase();
    });
    afterAll(async () => {
      await db?.drop();
    });

    it("stops the server at start, naming `keygate migrate`, and writes nothing", async () => {
      const run = await keygate(["serve"], { DATABASE_URL: db.url, ...secrets() });
      expect(run.code).toBe(exitCodes.migrationsPending);
      const lines = oneLine(run.stderr);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/is not migrated \(\d+ of \d+ migrations missing, the first 001_/);
      expect(lines[0]).toContain("run `keygate migrate` with the same DATABASE_URL");
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      try {
        const { rows } = await client.query(
          "SELECT to_regclass('workspaces') IS NULL AND to_regclass('schema_migrations') IS NULL AS empty",
        );
        expect(rows[0].empty).toBe(true);
      } finally {
        await client.end();
      }
    });

    it("admin-key create --deployment refuses it the same way", async () => {
      const run = await keygate(["admin-key", "create", "--deployment"], { DATABASE_URL: db.url });
      expect(run.code).toBe(exitCodes.migrationsPending);
      expect(oneLine(run.stderr)).toHaveLength(1);
      expect(run.stdout).not.toMatch(/kg_/);
    });
  });

  describe("busy ports", () => {
    let dataDir: string;
    beforeAll(async () => {
      dataDir = await mkdtemp(path.join(tmpdir(), "keygate-startup-"));
    });
    afterAll(async () => {
      await rm(dataDir, { recursive: true, force: true });
    });

    it("a busy service port", async () => {
      const held = await holdPort();
      try {
        const run = await keygate(["serve"], {
          KEYGATE_DATA_DIR: dataDir,
          KEYGATE_PORT: String(held.port),
        });
        expect(run.code).toBe(exitCodes.servicePortUnavailable);
        expect(oneLine(run.stderr)).toEqual([
          `service port 127.0.0.1:${held.port} is in use: stop the process that holds it, or set KEYGATE_PORT to a free port`,
        ]);
        // No key shown on a failed start, and none made: it would be lost.
        expect(run.stdout).not.toMatch(/kg_[A-Za-z0-9]{8}_/);
      } finally {
        await held.release();
      }
    });

    it("a busy metrics port", async () => {
      const held = await holdPort();
      try {
        const run = await keygate(["serve"], {
          KEYGATE_DATA_DIR: dataDir,
          KEYGATE_METRICS_PORT: String(held.port),
        });
        expect(run.code).toBe(exitCodes.metricsPortUnavailable);
        expect(oneLine(run.stderr)).toEqual([
          `metrics port 127.0.0.1:${held.port} is in use: stop the process that holds it, or set KEYGATE_METRICS_PORT to a free port (or KEYGATE_METRICS=false)`,
        ]);
        expect(run.stdout).not.toMatch(/kg_[A-Za-z0-9]{8}_/);
      } finally {
        await held.release();
      }
    });

    it("the first start that succeeds after them still shows the first admin key", async () => {
      const run = await keygate(
        ["serve"],
        { KEYGATE_DATA_DIR: dataDir },
        { stopWhenListening: true },
      );
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/First start: created workspace "default"/);
      expect(run.stdout).toMatch(/\n {2}kg_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}\n/);
    });
  });
});

describe("docs/operations.md", () => {
  it("lists every start-up exit code, with what it means, as the code has them", async () => {
    const doc = await readFile(path.join(root, "docs/operations.md"), "utf8");
    const documented = new Set([...doc.matchAll(/^\| (\d+) \|/gm)].map((m) => Number(m[1])));
    for (const [name, code] of Object.entries(exitCodes))
      expect(documented.has(code), `${name} (${code}) is in the table`).toBe(true);
  });
});

describe("admin-key create --deployment: a first key straight from the database", {
  timeout: 90_000,
}, () => {
  let db: Awaited<ReturnType<typeof externalDatabase>>;
  beforeAll(async () => {
    db = await externalDatabase();
    const migrated = await keygate(["migrate"], { DATABASE_URL: db.url, ...secrets() });
    expect(migrated.code).toBe(0);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("needs DATABASE_URL and nothing else, and the key it prints opens the admin API", async () => {
    // Only DATABASE_URL: no server secrets, no issuer, no mail settings, no server running.
    const made = await keygate(
      ["admin-key", "create", "--deployment", "--name", "operator", "--introspect"],
      { DATABASE_URL: db.url },
    );
    expect(made.stderr).toBe("");
    expect(made.code).toBe(0);
    const answer = JSON.parse(made.stdout) as {
      secret: string;
      adminKey: { id: string; name: string; workspaceId?: string; introspect?: boolean };
    };
    expect(answer.secret).toMatch(/^kg_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}$/);
    expect(answer.adminKey.name).toBe("operator");
    expect(answer.adminKey.workspaceId ?? "").toBe("");
    expect(answer.adminKey.introspect).toBe(true);
    expect(await countRows(db.url, "audit_events WHERE type = 'admin_key_created'")).toBe(1);

    // A server on that database, as kubernetes.yaml runs it: no bootstrap.
    const port = await freePort();
    const server = spawn(process.execPath, [bin, "serve"], {
      cwd: root,
      env: {
        PATH: process.env.PATH ?? "",
        KEYGATE_PORT: String(port),
        KEYGATE_METRICS_PORT: "0",
        KEYGATE_BOOTSTRAP: "false",
        DATABASE_URL: db.url,
        ...secrets(),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    server.stdout.on("data", (c: Buffer) => {
      out += c.toString();
    });
    const exited = new Promise<number | null>((resolve) => server.once("exit", resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        const check = setInterval(() => {
          if (out.includes('"msg":"keygate listening"')) {
            clearInterval(check);
            resolve();
          }
        }, 20);
        exited.then((code) => {
          clearInterval(check);
          reject(new Error(`server exited with ${code}: ${out}`));
        });
      });
      expect(out).not.toMatch(/kg_[A-Za-z0-9]{8}_/);
      const admin = createClient(
        AdminService,
        createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" }),
      );
      const auth = { headers: { authorization: `Bearer ${answer.secret}` } };
      const created = await admin.createWorkspace({ name: "Acme", slug: "acme" }, auth);
      expect(created.workspace?.slug).toBe("acme");
      const keys = await admin.listAdminKeys({ pageSize: 10 }, auth);
      expect(keys.adminKeys.map((k) => k.id)).toContain(answer.adminKey.id);
    } finally {
      server.kill("SIGTERM");
      await exited;
    }
  });

  it("without DATABASE_URL says what it needs and makes nothing", async () => {
    const run = await keygate(["admin-key", "create", "--deployment"], {});
    expect(run.code).toBe(exitCodes.config);
    expect(oneLine(run.stderr)).toHaveLength(1);
    expect(run.stderr).toContain("DATABASE_URL");
    expect(run.stdout).toBe("");
  });
});
