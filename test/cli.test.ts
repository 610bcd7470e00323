import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { configFromEnv } from "../src/config.js";
import { openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import { externalDatabaseEnv, freshDatabaseUrl } from "./support/database.js";

const root = path.resolve(import.meta.dirname, "..");
const bin = path.join(root, "bin/keygate.mjs");

interface Running {
  child: ChildProcess;
  url: string;
  stdout: () => string;
  exit: Promise<number | null>;
}

/** Starts `keygate serve` as a user would, and waits for its "listening" log line. */
function serve(env: Record<string, string>): Promise<Running> {
  const child = spawn(process.execPath, [bin, "serve"], {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", KEYGATE_PORT: "0", KEYGATE_METRICS_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no listening line in 45 s:\n${out}\n${err}`)),
      45_000,
    );
    child.stderr?.on("data", (c: Buffer) => {
      err += c.toString();
    });
    child.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      const match = /"url":"(http:\/\/[^"]+)".*"msg":"keygate listening"/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ child, url: match[1] as string, stdout: () => out, exit });
      }
    });
    exit.then((code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}:\n${out}\n${err}`));
    });
  });
}

describe("keygate serve", { timeout: 90_000 }, () => {
  let dataDir: string;
  let db: Awaited<ReturnType<typeof freshDatabaseUrl>>;
  let env: Record<string, string>;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "keygate-cli-"));
    db = await freshDatabaseUrl();
    env = {
      KEYGATE_DATA_DIR: dataDir,
      KEYGATE_MIGRATE_ON_START: "true",
      ...externalDatabaseEnv(db.url),
    };
  });
  afterAll(async () => {
    await db?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  let adminKey: string;

  it("first start: serves, prints a bootstrap admin key once, and stops cleanly on SIGTERM", async () => {
    const running = await serve(env);
    const health = createClient(Health, createGrpcTransport({ baseUrl: running.url }));
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const key = /\n {2}(kg_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43})\n/.exec(running.stdout());
    expect(key).not.toBeNull();
    adminKey = key?.[1] as string;
    running.child.kill("SIGTERM");
    expect(await running.exit).toBe(0);
  });

  it("stores the admin key only as a hash", async () => {
    const database = await openDatabase(configFromEnv(env));
    try {
      const row = await database.pool.one(
        sql.type(z.object({ prefix: z.string(), hash: z.string(), whole: z.string() }))`
          SELECT prefix, encode(secret_hash, 'hex') AS hash, admin_keys::text AS whole FROM admin_keys`,
      );
      expect(adminKey.startsWith(`${row.prefix}_`)).toBe(true);
      expect(row.hash).toBe(createHash("sha256").update(adminKey).digest("hex"));
      expect(row.whole).not.toContain(adminKey.slice(row.prefix.length + 1));
    } finally {
      await database.close();
    }
  });

  it("second start on the same data creates nothing and prints no key", async () => {
    const running = await serve(env);
    running.child.kill("SIGINT");
    expect(await running.exit).toBe(0);
    expect(running.stdout()).not.toMatch(/kg_[A-Za-z0-9]{8}_/);
  });

  it("refuses an external database without SMTP, in one line, before touching it", async () => {
    // Nothing listens there: the configuration is refused before any connection is tried.
    const child = spawn(process.execPath, [bin, "serve"], {
      cwd: root,
      env: {
        PATH: process.env.PATH ?? "",
        KEYGATE_PORT: "0",
        KEYGATE_METRICS_PORT: "0",
        KEYGATE_DATA_DIR: dataDir,
        DATABASE_URL: "postgres://keygate@127.0.0.1:1/keygate",
        KEYGATE_KEY_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString("base64"),
        KEYGATE_TOKEN_SECRET: Buffer.alloc(32, 2).toString("base64"),
        KEYGATE_ISSUER: "https://auth.example.test",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      err += c.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code).toBe(78);
    expect(err.trim().split("\n")).toEqual([
      "Invalid configuration:",
      "  - KEYGATE_SMTP_URL or KEYGATE_SMTP_HOST: required with DATABASE_URL (or KEYGATE_MAIL_DEV_OUTBOX=true to print mail to the console)",
    ]);
    expect(out).not.toContain("dev outbox");
  });

  it("refuses invalid configuration, naming every bad variable, with a non-zero exit", async () => {
    const child = spawn(process.execPath, [bin, "serve"], {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", KEYGATE_PORT: "99999", KEYGATE_LOG_LEVEL: "chatty" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (c: Buffer) => {
      err += c.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code).not.toBe(0);
    expect(err).toContain("KEYGATE_PORT");
    expect(err).toContain("KEYGATE_LOG_LEVEL");
  });
});
