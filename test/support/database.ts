import { randomBytes } from "node:crypto";
import pg from "pg";

/**
 * A database for one test file. With TEST_DATABASE_URL set: a fresh database on that server,
 * dropped afterwards. Without: undefined, and the service starts its embedded PGlite in a
 * temporary data directory.
 */
export async function freshDatabaseUrl(): Promise<{
  url: string | undefined;
  drop(): Promise<void>;
}> {
  const admin = process.env.TEST_DATABASE_URL;
  if (!admin) return { url: undefined, drop: async () => {} };
  const name = `keygate_test_${randomBytes(6).toString("hex")}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export const usingExternalPostgres = Boolean(process.env.TEST_DATABASE_URL);

/**
 * Settings an external database needs besides its URL: the shared server secrets, the issuer
 * (the one a test instance on port 0 gets by default in embedded mode) and a place for mail,
 * the dev outbox asked for explicitly (withMailSettings drops it for callers that give SMTP).
 */
export function externalDatabaseEnv(url: string | undefined): Record<string, string> {
  if (!url) return {};
  return {
    DATABASE_URL: url,
    KEYGATE_KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
    KEYGATE_TOKEN_SECRET: randomBytes(32).toString("base64"),
    KEYGATE_ISSUER: "http://127.0.0.1:0",
    KEYGATE_MAIL_DEV_OUTBOX: "true",
  };
}

/** The environment without the dev outbox when it names an SMTP server (they exclude each other). */
export function withMailSettings(
  env: Record<string, string | undefined>,
): Record<string, string | undefined> {
  if (!env.KEYGATE_SMTP_URL && !env.KEYGATE_SMTP_HOST) return env;
  const { KEYGATE_MAIL_DEV_OUTBOX: _, ...rest } = env;
  return rest;
}
