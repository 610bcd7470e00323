import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, configFromEnv, settingNames } from "../src/config.js";

describe("configFromEnv", () => {
  it("starts with no variables at all: loopback 8080, embedded database, dev outbox", () => {
    const config = configFromEnv({});
    expect(config.host).toBe("127.0.0.1");
    expect(config.port).toBe(8080);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.migrateOnStart).toBe(true);
    expect(config.smtp).toBeUndefined();
    expect(config.issuer).toBe("http://127.0.0.1:8080");
    expect(config.hashWorkerNice).toBe(10);
    expect(Object.isFrozen(config)).toBe(true);
  });

  const secrets = {
    KEYGATE_KEY_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString("base64"),
    KEYGATE_TOKEN_SECRET: Buffer.alloc(32, 2).toString("base64"),
  };

  /** What every instance on an external database is given. */
  const external = {
    DATABASE_URL: "postgres://db/keygate",
    ...secrets,
    KEYGATE_ISSUER: "https://auth.example.test",
    KEYGATE_SMTP_URL: "smtp://mail.example.test:587",
  };

  it("migrates an external database only when asked", () => {
    expect(configFromEnv(external).migrateOnStart).toBe(false);
    expect(configFromEnv({ ...external, KEYGATE_MIGRATE_ON_START: "true" }).migrateOnStart).toBe(
      true,
    );
  });

  it("needs the shared secrets with an external database", () => {
    expect(() => configFromEnv({ DATABASE_URL: "postgres://db/keygate" })).toThrow(
      /KEYGATE_KEY_ENCRYPTION_KEY/,
    );
    const short = { ...external, KEYGATE_TOKEN_SECRET: "c2hvcnQ=" };
    expect(() => configFromEnv(short)).toThrow(/KEYGATE_TOKEN_SECRET: expected at least 32 bytes/);
  });

  it("needs KEYGATE_ISSUER with an external database, not in embedded mode", () => {
    const { KEYGATE_ISSUER: _, ...unset } = external;
    let error: unknown;
    try {
      configFromEnv(unset);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      "KEYGATE_ISSUER: required with DATABASE_URL, the same on every instance",
    ]);
    expect(configFromEnv(external).issuer).toBe("https://auth.example.test");
    expect(configFromEnv({}).issuer).toBe("http://127.0.0.1:8080");
  });

  it("needs SMTP with an external database unless the dev outbox is asked for", () => {
    const { KEYGATE_SMTP_URL: _, ...noSmtp } = external;
    let error: unknown;
    try {
      configFromEnv(noSmtp);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      "KEYGATE_SMTP_URL or KEYGATE_SMTP_HOST: required with DATABASE_URL (or KEYGATE_MAIL_DEV_OUTBOX=true to print mail to the console)",
    ]);
    expect(configFromEnv({ ...noSmtp, KEYGATE_MAIL_DEV_OUTBOX: "true" }).smtp).toBeUndefined();
    expect(configFromEnv({ ...noSmtp, KEYGATE_SMTP_HOST: "mail" }).smtp).toMatchObject({
      host: "mail",
    });
    expect(() => configFromEnv({ ...external, KEYGATE_MAIL_DEV_OUTBOX: "true" })).toThrow(
      /KEYGATE_MAIL_DEV_OUTBOX and KEYGATE_SMTP_URL or KEYGATE_SMTP_HOST: set one/,
    );
    expect(() => configFromEnv({ KEYGATE_MAIL_DEV_OUTBOX: "false" })).toThrow(
      /KEYGATE_MAIL_DEV_OUTBOX=false: needs KEYGATE_SMTP_URL or KEYGATE_SMTP_HOST/,
    );
    // Embedded mode keeps the zero-setting start: the dev outbox without being asked.
    expect(configFromEnv({}).smtp).toBeUndefined();
  });

  it("validates workspace defaults as JSON with known, in-range keys", () => {
    const defaults = (json: string) =>
      configFromEnv({ KEYGATE_WORKSPACE_DEFAULTS: json }).workspaceDefaults;
    expect(defaults('{"magic_link": false}').magic_link).toBe(false);
    expect(defaults("{}").magic_link).toBe(true);
    for (const bad of ["{nope", '{"password_min_length": 3}', '{"unknown_flag": true}']) {
      expect(() => defaults(bad)).toThrow(/KEYGATE_WORKSPACE_DEFAULTS/);
    }
  });

  it("treats empty strings as unset", () => {
    expect(configFromEnv({ KEYGATE_PORT: "", DATABASE_URL: "" }).port).toBe(8080);
  });

  it("reports every invalid variable by name in one error", () => {
    let error: unknown;
    try {
      configFromEnv({
        KEYGATE_PORT: "eighty",
        KEYGATE_DB_POOL_SIZE: "0",
        DATABASE_URL: "mysql://x",
        KEYGATE_LOG_LEVEL: "loud",
        KEYGATE_HASH_WORKER_NICE: "20",
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join("\n");
    for (const name of [
      "KEYGATE_PORT",
      "KEYGATE_DB_POOL_SIZE",
      "DATABASE_URL",
      "KEYGATE_LOG_LEVEL",
      "KEYGATE_HASH_WORKER_NICE",
    ]) {
      expect(problems).toContain(name);
    }
  });

  it("never echoes a value, which may be a secret", () => {
    const secret = "hunter2-very-secret";
    let message = "";
    try {
      configFromEnv({
        DATABASE_URL: `mysql://admin:${secret}@db/x`,
        KEYGATE_SMTP_URL: `ftp://u:${secret}@mail`,
      });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain("DATABASE_URL");
    expect(message).toContain("KEYGATE_SMTP_URL");
    expect(message).not.toContain(secret);
  });

  it("needs both TLS files or neither", () => {
    expect(() => configFromEnv({ KEYGATE_TLS_CERT_FILE: "/tmp/cert.pem" })).toThrow(
      /KEYGATE_TLS_KEY_FILE/,
    );
    const tls = configFromEnv({ KEYGATE_TLS_CERT_FILE: "/c.pem", KEYGATE_TLS_KEY_FILE: "/k.pem" });
    expect(tls.issuer).toBe("https://127.0.0.1:8080");
  });

  it("takes SMTP as a URL or as host and port", () => {
    expect(configFromEnv({ KEYGATE_SMTP_URL: "smtp://mail:2525" }).smtp).toEqual({
      url: "smtp://mail:2525",
    });
    expect(
      configFromEnv({ KEYGATE_SMTP_HOST: "mail", KEYGATE_SMTP_SECURE: "true" }).smtp,
    ).toMatchObject({
      host: "mail",
      port: 465,
      secure: true,
    });
  });
});

describe("docs/configuration.md", () => {
  it("documents every setting in its configuration table", async () => {
    const doc = await readFile(
      path.resolve(import.meta.dirname, "../docs/configuration.md"),
      "utf8",
    );
    const missing = settingNames.filter(
      (name) => !new RegExp(`^\\| \`${name}\` +\\|`, "m").test(doc),
    );
    expect(missing).toEqual([]);
  });
});
