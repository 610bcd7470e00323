import { isIP } from "node:net";
import { z } from "zod";
import { rateLimitsSchema, workspaceSettingsSchema } from "./workspace-settings.js";

/**
 * The environment variables Keygate reads, each with its syntax, range and default.
 * configFromEnv (config.ts) parses them with this schema, checks them against each other and
 * turns them into a Config.
 */

const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"], { error: "expected true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");

const port = z.coerce
  .number({ error: "expected a port number" })
  .int()
  .min(0, "expected a port number (0-65535)")
  .max(65535, "expected a port number (0-65535)");

const positiveInt = (max: number) =>
  z.coerce
    .number({ error: "expected a whole number" })
    .int("expected a whole number")
    .min(1, "expected at least 1")
    .max(max, `expected at most ${max}`);

const list = z.string().transform((v) =>
  v
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0),
);

const url = z.url({ error: "expected a URL" });

/** A variable holding JSON, parsed before its schema checks it. */
const json = z.string().transform((text, ctx) => {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    ctx.addIssue({ code: "custom", message: "expected a JSON object" });
    return z.NEVER;
  }
});

/** 32 or more random bytes, base64 or base64url encoded. */
const base64Key = z
  .string()
  .regex(/^[A-Za-z0-9+/_-]+={0,2}$/, "expected base64")
  .transform((v) => Buffer.from(v, "base64"))
  .refine((b) => b.length >= 32, "expected at least 32 bytes (base64 of `openssl rand 32`)");

export const logLevel = z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

export const envSchema = z.object({
  KEYGATE_HOST: z.string().min(1).default("127.0.0.1"),
  KEYGATE_PORT: port.default(8080),
  KEYGATE_TLS_CERT_FILE: z.string().min(1).optional(),
  KEYGATE_TLS_KEY_FILE: z.string().min(1).optional(),
  KEYGATE_CORS_ORIGINS: list.default([]),
  // Room for a full IntrospectBatch (100 access tokens, about 84 KB in binary, more in JSON).
  KEYGATE_MAX_REQUEST_BYTES: positiveInt(16 * 1024 * 1024).default(128 * 1024),
  KEYGATE_MAX_TIMEOUT_MS: positiveInt(3_600_000).default(30_000),
  KEYGATE_SHUTDOWN_TIMEOUT_MS: positiveInt(600_000).default(10_000),
  KEYGATE_HTTP2_MAX_CONCURRENT_STREAMS: positiveInt(100_000).default(100),
  KEYGATE_MAX_CONNECTIONS_PER_IP: positiveInt(1_000_000).default(256),
  KEYGATE_MAX_WATCH_STREAMS_PER_IP: positiveInt(1_000_000).default(64),
  KEYGATE_REQUEST_RECEIVE_TIMEOUT_MS: positiveInt(600_000).default(10_000),
  KEYGATE_IDLE_CONNECTION_TIMEOUT_MS: positiveInt(3_600_000).default(60_000),
  KEYGATE_WATCH_MAX_AGE_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(86_400_000)
    .default(30 * 60_000),
  KEYGATE_LOG_LEVEL: logLevel.default("info"),
  KEYGATE_LOG_SAMPLE_EVERY: positiveInt(1_000_000).default(100),
  KEYGATE_FAST_LANE: bool.default(true),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "expected a postgres:// or postgresql:// URL")
    .optional(),
  KEYGATE_DB_POOL_SIZE: positiveInt(500).default(10),
  KEYGATE_DATA_DIR: z.string().min(1).default(".keygate"),
  KEYGATE_MIGRATE_ON_START: bool.optional(),
  KEYGATE_BOOTSTRAP: bool.default(true),
  KEYGATE_SMTP_URL: z
    .string()
    .regex(/^smtps?:\/\//, "expected an smtp:// or smtps:// URL")
    .optional(),
  KEYGATE_SMTP_HOST: z.string().min(1).optional(),
  KEYGATE_SMTP_PORT: port.optional(),
  KEYGATE_SMTP_USER: z.string().min(1).optional(),
  KEYGATE_SMTP_PASSWORD: z.string().min(1).optional(),
  KEYGATE_SMTP_SECURE: bool.default(false),
  KEYGATE_MAIL_FROM: z.string().min(3).default("Keygate <no-reply@keygate.localhost>"),
  KEYGATE_MAIL_DEV_OUTBOX: bool.optional(),
  KEYGATE_PUBLIC_URL: url.optional(),
  KEYGATE_ISSUER: url.optional(),
  KEYGATE_WEBAUTHN_RP_ID: z
    .string()
    .regex(
      /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/,
      "expected a lower-case host name (no scheme, port or path)",
    )
    .optional(),
  KEYGATE_WEBAUTHN_ORIGINS: list
    .refine(
      (items) => items.every((i) => originOf(i) === i),
      "expected origins such as https://login.example.com (scheme, host and port only)",
    )
    .optional(),
  KEYGATE_AUDIENCE: z.string().min(1).default("keygate"),
  KEYGATE_JWT_ALGORITHM: z.enum(["ES256", "EdDSA", "RS256"]).default("RS256"),
  KEYGATE_KEY_ENCRYPTION_KEY: base64Key.optional(),
  KEYGATE_TOKEN_SECRET: base64Key.optional(),
  KEYGATE_BCRYPT_COST: z.coerce
    .number()
    .int()
    .min(10, "expected at least 10")
    .max(16, "expected at most 16")
    .default(10),
  KEYGATE_HASH_WORKERS: positiveInt(64).optional(),
  KEYGATE_HASH_WORKER_NICE: z.coerce.number().int().min(0).max(19).default(10),
  KEYGATE_REFRESH_GRACE_SECONDS: z.coerce.number().int().min(0).max(120).default(10),
  KEYGATE_ALLOW_WORKSPACE_CREATION: bool.default(false),
  KEYGATE_WORKSPACE_DEFAULTS: json.pipe(workspaceSettingsSchema.partial().strict()).optional(),
  KEYGATE_MAIL_TEMPLATES_DIR: z.string().min(1).optional(),
  KEYGATE_RATE_LIMITS: json.pipe(rateLimitsSchema.partial().strict()).optional(),
  KEYGATE_TRUSTED_PROXIES: list
    .refine(
      (items) => items.every((i) => parseCidr(i) !== undefined),
      "expected IP addresses or CIDR ranges",
    )
    .default([]),
  KEYGATE_IPV6_PREFIX_LENGTH: z.coerce.number().int().min(32).max(128).default(64),
  KEYGATE_UI: bool.default(false),
  KEYGATE_LOCKOUT_THRESHOLD: z.coerce.number().int().min(1).max(1000).default(5),
  KEYGATE_ADMIN_KEY_MAX_LIFETIME_DAYS: z.coerce.number().int().min(1).max(3650).default(90),
  KEYGATE_OIDC_LOGOUT_PRIVATE_NETWORKS: bool.optional(),
  KEYGATE_LOCKOUT_BASE_SECONDS: z.coerce.number().int().min(1).max(86_400).default(60),
  KEYGATE_LOCKOUT_MAX_SECONDS: z.coerce
    .number()
    .int()
    .min(1)
    .max(7 * 86_400)
    .default(3600),
  KEYGATE_REVOCATION_RESYNC_MS: z.coerce.number().int().min(50).max(600_000).default(5_000),
  KEYGATE_REVOCATION_MAX_STALENESS_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(3_600_000)
    .default(15_000),
  KEYGATE_REVOCATION_HEARTBEAT_MS: z.coerce.number().int().min(100).max(300_000).default(1_000),
  KEYGATE_METRICS: bool.default(true),
  KEYGATE_METRICS_HOST: z.string().min(1).default("127.0.0.1"),
  KEYGATE_METRICS_PORT: port.default(9464),
  KEYGATE_OTLP_ENDPOINT: url.optional(),
  KEYGATE_TRACE_SAMPLE_RATIO: z.coerce.number().min(0).max(1).default(1),
  KEYGATE_MAIL_LEASE_MS: z.coerce.number().int().min(1_000).max(3_600_000).default(60_000),
  KEYGATE_MAIL_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(4),
  KEYGATE_DIRECT_DATABASE_URL: z.string().min(1).optional(),
  KEYGATE_SIGNING_KEY_ROTATION_DAYS: z.coerce.number().int().min(0).max(3650).default(30),
  KEYGATE_SWEEP_INTERVAL_MS: z.coerce.number().int().min(1_000).max(86_400_000).default(300_000),
  KEYGATE_INTROSPECTION_CACHE_SIZE: z.coerce.number().int().min(0).max(10_000_000).default(100_000),
});

/** The origin of a URL (scheme, host, port), or undefined when it is not an http(s) URL. */
function originOf(text: string): string | undefined {
  try {
    const u = new URL(text);
    return u.protocol === "https:" || u.protocol === "http:" ? u.origin : undefined;
  } catch {
    return undefined;
  }
}

/** An IP address or CIDR range, as [address, prefix length, family]. */
export function parseCidr(text: string): [string, number, "ipv4" | "ipv6"] | undefined {
  const [address = "", prefix] = text.split("/");
  const family = isIP(address);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  const bits = prefix === undefined ? max : Number(prefix);
  if (!Number.isInteger(bits) || bits < 0 || bits > max) return undefined;
  return [address, bits, family === 4 ? "ipv4" : "ipv6"];
}

export type Env = z.input<typeof envSchema>;

/** The names of every variable read, for the table check of docs/configuration.md. */
export const settingNames: readonly string[] = Object.keys(envSchema.shape);
