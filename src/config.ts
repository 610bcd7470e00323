import { isIP } from "node:net";
import { availableParallelism } from "node:os";
import { z } from "zod";

/**
 * Every setting Keygate reads, from KEYGATE_* variables (and DATABASE_URL). Parsed once at
 * start; every problem is reported by name in one message. Tests build a Config directly
 * with `configFromEnv({...})` or by spreading `defaultConfig()`.
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

/** The rate limits every public flow goes through; each holds per workspace and subject. */
export const rateLimitNames = [
  "login_ip",
  "login_account",
  "signup_ip",
  "signup_address",
  "password_reset_ip",
  "password_reset_address",
  "magic_link_ip",
  "magic_link_address",
  "verification_address",
  "otp_send_address",
  "code_verify_ip",
  "oauth_client_ip",
  "deployment_ip",
  "passkey_challenge_ip",
] as const;
export type RateLimitName = (typeof rateLimitNames)[number];

const rateLimitRule = z.object({
  limit: z.number().int().min(1).max(100_000),
  window_seconds: z
    .number()
    .int()
    .min(1)
    .max(7 * 86_400),
});
export type RateLimitRule = z.infer<typeof rateLimitRule>;
const rateLimitsSchema = z.object(
  Object.fromEntries(rateLimitNames.map((n) => [n, rateLimitRule])) as Record<
    RateLimitName,
    typeof rateLimitRule
  >,
);
export type RateLimits = z.infer<typeof rateLimitsSchema>;

export const builtInRateLimits: RateLimits = Object.freeze({
  login_ip: { limit: 10, window_seconds: 900 },
  login_account: { limit: 10, window_seconds: 900 },
  signup_ip: { limit: 10, window_seconds: 3600 },
  signup_address: { limit: 3, window_seconds: 3600 },
  password_reset_ip: { limit: 10, window_seconds: 3600 },
  password_reset_address: { limit: 3, window_seconds: 3600 },
  magic_link_ip: { limit: 10, window_seconds: 3600 },
  magic_link_address: { limit: 5, window_seconds: 3600 },
  verification_address: { limit: 3, window_seconds: 600 },
  otp_send_address: { limit: 3, window_seconds: 600 },
  code_verify_ip: { limit: 30, window_seconds: 600 },
  // A known client key is looked up at most once a second per instance; wrong ones every time.
  oauth_client_ip: { limit: 300, window_seconds: 60 },
  // Every per-workspace per-IP limit above also counts here, across all workspaces, so that
  // a client cannot multiply its budget by the number of workspaces it names.
  deployment_ip: { limit: 50, window_seconds: 900 },
  // Public passkey challenges (every sign-in page load asks for one for autofill), counted
  // per client across all workspaces: each is a row until it is swept.
  passkey_challenge_ip: { limit: 300, window_seconds: 600 },
});

/**
 * The embedded database's limits when KEYGATE_RATE_LIMITS is unset: ten times the ones above.
 * Embedded mode is for development (one instance, mail printed to the console), where one
 * person trying curl, a script and the web app from one address would otherwise be locked
 * out within minutes. The start says so in a warning line.
 */
export const developmentRateLimits: RateLimits = Object.freeze(
  Object.fromEntries(
    Object.entries(builtInRateLimits).map(([name, rule]) => [
      name,
      { limit: Math.min(100_000, rule.limit * 10), window_seconds: rule.window_seconds },
    ]),
  ) as RateLimits,
);

/** Limits that only the deployment sets: a workspace's settings cannot raise them. */
const deploymentOnlyLimits = { deployment_ip: true, passkey_challenge_ip: true } as const;

/**
 * A workspace's capability flags, as stored (snake_case, as in the API). Every key is
 * optional in storage; the server defaults fill the gaps.
 */
export const workspaceSettingsSchema = z.object({
  signup: z.boolean(),
  reset_password: z.boolean(),
  password_reset: z.enum(["link", "code"]),
  magic_link: z.boolean(),
  email_verification: z.enum(["off", "code", "link"]),
  require_email_verification: z.boolean(),
  password_min_length: z.number().int().min(8).max(256),
  otp_login: z.enum(["off", "optional", "required"]),
  passwordless_otp: z.boolean(),
  /** Lifetime of emailed one-time codes (OtpService), at most 10 minutes. */
  otp_ttl_seconds: z.number().int().min(60).max(600),
  /** ChangePassword needs a fresh action proof from OtpService (purpose SENSITIVE_ACTION). */
  action_proof_required: z.boolean(),
  access_token_ttl_seconds: z.number().int().min(60).max(86_400),
  refresh_idle_timeout_seconds: z.number().int().min(300).max(31_536_000),
  session_lifetime_seconds: z.number().int().min(300).max(31_536_000),
  /** Factors beyond the password (FactorService): off, optional, or required of every member. */
  mfa: z.enum(["off", "optional", "required"]),
  /** Where mfa is optional: the roles that need a factor (and "mfa" tokens for AdminService). */
  mfa_required_roles: z.array(z.enum(["owner", "admin", "member"])).max(3),
  /** Username-less sign-in with a passkey. */
  passkey_sign_in: z.boolean(),
  /** No password login: passkeys (and emailed codes or links where those are on). */
  passwordless_only: z.boolean(),
  /** Per-workspace overrides of single rate limits; the rest come from KEYGATE_RATE_LIMITS. */
  rate_limits: rateLimitsSchema.omit(deploymentOnlyLimits).partial().strict().optional(),
});
export type WorkspaceSettings = z.infer<typeof workspaceSettingsSchema>;

export const builtInWorkspaceDefaults: WorkspaceSettings = Object.freeze({
  signup: true,
  reset_password: true,
  password_reset: "link",
  magic_link: true,
  email_verification: "code",
  require_email_verification: false,
  password_min_length: 8,
  otp_login: "off",
  passwordless_otp: false,
  otp_ttl_seconds: 300,
  action_proof_required: false,
  mfa: "optional",
  mfa_required_roles: [],
  passkey_sign_in: true,
  passwordless_only: false,
  access_token_ttl_seconds: 900,
  refresh_idle_timeout_seconds: 14 * 86_400,
  session_lifetime_seconds: 30 * 86_400,
});

const logLevel = z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

const envSchema = z.object({
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
  KEYGATE_WATCH_MAX_AGE_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(86_400_000)
    .default(30 * 60_000),
  KEYGATE_LOG_LEVEL: logLevel.default("info"),
  KEYGATE_LOG_SAMPLE_EVERY: positiveInt(1_000_000).default(100),
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

/** Whether `host` is the RP ID or one of its subdomains, as WebAuthn requires of an origin. */
function hostWithin(host: string, rpId: string): boolean {
  return host === rpId || host.endsWith(`.${rpId}`);
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

export interface Config {
  readonly host: string;
  readonly port: number;
  readonly tls: { readonly certFile: string; readonly keyFile: string } | undefined;
  readonly corsOrigins: readonly string[];
  readonly maxRequestBytes: number;
  readonly maxTimeoutMs: number;
  readonly shutdownTimeoutMs: number;
  /** What one client may hold open (SECURITY.md 36). */
  readonly streams: {
    /** SETTINGS_MAX_CONCURRENT_STREAMS of every HTTP/2 connection. */
    readonly http2MaxConcurrentStreams: number;
    /** Open connections per client IP (bucket); trusted proxies are exempt. */
    readonly maxConnectionsPerIp: number;
    /** Open Health/Watch and WatchRevocations streams per client IP (bucket). */
    readonly maxWatchStreamsPerIp: number;
    /** Watch streams end (OK) after about this long; clients reconnect and resume. */
    readonly watchMaxAgeMs: number;
  };
  readonly logLevel: z.infer<typeof logLevel>;
  /**
   * One successful hot-path call (Introspect, IntrospectBatch, GetJwks, Envoy Check, health
   * checks, POST /oauth2/introspect) in this many is logged; the rest are counted. 1: all.
   */
  readonly logSampleEvery: number;
  /** External PostgreSQL; undefined selects the embedded database under dataDir. */
  readonly databaseUrl: string | undefined;
  readonly dbPoolSize: number;
  readonly dataDir: string;
  readonly migrateOnStart: boolean;
  readonly bootstrap: boolean;
  /** Where mail goes; undefined only with the dev outbox (embedded, or asked for). */
  readonly smtp: SmtpConfig | undefined;
  readonly mailFrom: string;
  /** Base URL of the app that users open; links in emails are built from it. */
  readonly publicUrl: string;
  /** Serve the web app at /ui/. */
  readonly ui: boolean;
  /**
   * Passkeys (WebAuthn): the relying party's ID and the origins whose answers count. From
   * configuration only, never from a request's headers.
   */
  readonly webauthn: { readonly rpId: string; readonly origins: readonly string[] };
  /** The `iss` of every token, and Keygate's own public URL. */
  readonly issuer: string;
  /** The `aud` of every access token. */
  readonly audience: string;
  readonly jwtAlgorithm: "ES256" | "EdDSA" | "RS256";
  /** Encrypts signing keys at rest; generated into dataDir in embedded mode when unset. */
  readonly keyEncryptionKey: Buffer | undefined;
  /** Keys the HMACs of refresh tokens and codes; generated like keyEncryptionKey. */
  readonly tokenSecret: Buffer | undefined;
  readonly bcryptCost: number;
  readonly hashWorkers: number;
  /** Nice value of the hash worker threads (Linux): hashing yields the cores to serving. */
  readonly hashWorkerNice: number;
  readonly refreshGraceSeconds: number;
  readonly allowWorkspaceCreation: boolean;
  readonly workspaceDefaults: WorkspaceSettings;
  readonly mailTemplatesDir: string | undefined;
  readonly rateLimits: RateLimits;
  /** True when rateLimits are developmentRateLimits (embedded, KEYGATE_RATE_LIMITS unset). */
  readonly developmentRateLimits: boolean;
  /** Peers whose X-Forwarded-For is believed (IP addresses or CIDR ranges). */
  readonly trustedProxies: readonly string[];
  /** IPv6 clients are counted by this prefix for per-IP limits (one host holds a /64). */
  readonly ipv6PrefixLength: number;
  /** Longest lifetime of an admin key minted by a signed-in user (or by such a key). */
  readonly adminKeyMaxLifetimeDays: number;
  /**
   * Whether back-channel logout tokens may go to loopback, private and link-local addresses
   * (a workspace admin names the URL). Default: only with the embedded database.
   */
  readonly oidcLogoutPrivateNetworks: boolean;
  readonly lockout: {
    readonly threshold: number;
    readonly baseSeconds: number;
    readonly maxSeconds: number;
  };
  readonly revocation: {
    /** How often each instance re-reads the revocation feed besides LISTEN/NOTIFY. */
    readonly resyncMs: number;
    /** Without a successful read for this long, introspection answers UNAVAILABLE. */
    readonly maxStalenessMs: number;
    /** WatchRevocations sends a heartbeat after this long without an event. */
    readonly heartbeatMs: number;
  };
  /** Verified access tokens kept for repeated introspection (0: none). */
  readonly introspectionCacheSize: number;
  /** Serve Prometheus metrics at GET /metrics on a listener of their own. */
  readonly metrics: boolean;
  /** That listener's address: loopback by default, never the service port. */
  readonly metricsHost: string;
  readonly metricsPort: number;
  /** OTLP/HTTP traces endpoint (…/v1/traces); tracing is off without one. */
  readonly otlpEndpoint: string | undefined;
  /** Share of new traces recorded (callers' sampled traces are always continued). */
  readonly traceSampleRatio: number;
  /** How long a sender holds a claimed outbox message before another may take it. */
  readonly mailLeaseMs: number;
  /** Outbox messages each instance sends at once (and SMTP connections it keeps). */
  readonly mailConcurrency: number;
  /**
   * A connection that reaches PostgreSQL itself, not through a transaction pooler: LISTEN and
   * migrations' session locks need one. Defaults to databaseUrl.
   */
  readonly directDatabaseUrl: string | undefined;
  /** Publish a new signing key when the active one is this old (0: only when asked). */
  readonly signingKeyRotationDays: number;
  /** How often each instance tries the sweep and the scheduled rotation. */
  readonly sweepIntervalMs: number;
}

export type SmtpConfig =
  | { readonly url: string }
  | {
      readonly host: string;
      readonly port: number;
      readonly secure: boolean;
      readonly user: string | undefined;
      readonly password: string | undefined;
    };

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** Parses the environment; throws ConfigError listing every invalid variable. */
export function configFromEnv(env: Record<string, string | undefined>): Config {
  // Empty strings mean "unset", as shells and compose files tend to produce them.
  const present = Object.fromEntries(
    Object.entries(env).filter(([k, v]) => v !== undefined && v !== "" && k in envSchema.shape),
  );
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    // Issues name the variable and why; the value itself is never echoed (it may be secret).
    throw new ConfigError(
      parsed.error.issues.map((i) => `${i.path.join(".") || "(environment)"}: ${i.message}`),
    );
  }
  const e = parsed.data;
  const problems: string[] = [];
  const scheme = e.KEYGATE_TLS_CERT_FILE ? "https" : "http";
  const ownUrl = `${scheme}://${e.KEYGATE_HOST.includes(":") ? `[${e.KEYGATE_HOST}]` : e.KEYGATE_HOST}:${e.KEYGATE_PORT}`;
  if ((e.KEYGATE_TLS_CERT_FILE === undefined) !== (e.KEYGATE_TLS_KEY_FILE === undefined)) {
    problems.push("KEYGATE_TLS_CERT_FILE and KEYGATE_TLS_KEY_FILE: set both or neither");
  }
  if (e.KEYGATE_SMTP_URL !== undefined && e.KEYGATE_SMTP_HOST !== undefined) {
    problems.push("KEYGATE_SMTP_URL and KEYGATE_SMTP_HOST: set one or the other");
  }
  if (e.KEYGATE_DIRECT_DATABASE_URL !== undefined && e.DATABASE_URL === undefined) {
    problems.push("KEYGATE_DIRECT_DATABASE_URL: only with DATABASE_URL");
  }
  if (e.KEYGATE_REVOCATION_MAX_STALENESS_MS <= e.KEYGATE_REVOCATION_RESYNC_MS) {
    problems.push(
      "KEYGATE_REVOCATION_MAX_STALENESS_MS: must be longer than KEYGATE_REVOCATION_RESYNC_MS",
    );
  }
  if (e.DATABASE_URL !== undefined && (!e.KEYGATE_KEY_ENCRYPTION_KEY || !e.KEYGATE_TOKEN_SECRET)) {
    problems.push(
      "KEYGATE_KEY_ENCRYPTION_KEY and KEYGATE_TOKEN_SECRET: required with DATABASE_URL, the same on every instance",
    );
  }
  if (e.DATABASE_URL !== undefined && e.KEYGATE_ISSUER === undefined) {
    // The default, this listener's URL, differs between instances, and each instance would
    // refuse the others' tokens (introspection checks `iss`) without saying why.
    problems.push("KEYGATE_ISSUER: required with DATABASE_URL, the same on every instance");
  }
  const smtpSet = e.KEYGATE_SMTP_URL !== undefined || e.KEYGATE_SMTP_HOST !== undefined;
  if (smtpSet && e.KEYGATE_MAIL_DEV_OUTBOX === true) {
    problems.push("KEYGATE_MAIL_DEV_OUTBOX and KEYGATE_SMTP_URL or KEYGATE_SMTP_HOST: set one");
  } else if (!smtpSet && e.KEYGATE_MAIL_DEV_OUTBOX === false) {
    problems.push("KEYGATE_MAIL_DEV_OUTBOX=false: needs KEYGATE_SMTP_URL or KEYGATE_SMTP_HOST");
  } else if (!smtpSet && e.DATABASE_URL !== undefined && e.KEYGATE_MAIL_DEV_OUTBOX !== true) {
    // The dev outbox prints codes and links to the console: only embedded mode, which is for
    // development, picks it without being asked.
    problems.push(
      "KEYGATE_SMTP_URL or KEYGATE_SMTP_HOST: required with DATABASE_URL (or KEYGATE_MAIL_DEV_OUTBOX=true to print mail to the console)",
    );
  }
  if (
    e.KEYGATE_METRICS &&
    e.KEYGATE_METRICS_PORT !== 0 &&
    e.KEYGATE_METRICS_PORT === e.KEYGATE_PORT
  ) {
    problems.push("KEYGATE_METRICS_PORT: must differ from KEYGATE_PORT");
  }
  const publicUrl = e.KEYGATE_PUBLIC_URL ?? (e.KEYGATE_UI ? `${ownUrl}/ui` : ownUrl);
  const rpId = e.KEYGATE_WEBAUTHN_RP_ID ?? new URL(publicUrl).hostname.replace(/^\[|\]$/g, "");
  const webauthnOrigins = e.KEYGATE_WEBAUTHN_ORIGINS ?? [new URL(publicUrl).origin];
  const outside = webauthnOrigins.filter((o) => !hostWithin(new URL(o).hostname, rpId));
  if (outside.length > 0) {
    problems.push(
      `KEYGATE_WEBAUTHN_ORIGINS: every origin must be on the RP ID ${rpId} or a subdomain of it (${outside.join(", ")})`,
    );
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const developmentLimits = e.DATABASE_URL === undefined && e.KEYGATE_RATE_LIMITS === undefined;
  let smtp: SmtpConfig | undefined;
  if (e.KEYGATE_SMTP_URL) smtp = { url: e.KEYGATE_SMTP_URL };
  else if (e.KEYGATE_SMTP_HOST)
    smtp = {
      host: e.KEYGATE_SMTP_HOST,
      port: e.KEYGATE_SMTP_PORT ?? (e.KEYGATE_SMTP_SECURE ? 465 : 587),
      secure: e.KEYGATE_SMTP_SECURE,
      user: e.KEYGATE_SMTP_USER,
      password: e.KEYGATE_SMTP_PASSWORD,
    };

  return Object.freeze({
    host: e.KEYGATE_HOST,
    port: e.KEYGATE_PORT,
    tls:
      e.KEYGATE_TLS_CERT_FILE && e.KEYGATE_TLS_KEY_FILE
        ? { certFile: e.KEYGATE_TLS_CERT_FILE, keyFile: e.KEYGATE_TLS_KEY_FILE }
        : undefined,
    corsOrigins: Object.freeze([...e.KEYGATE_CORS_ORIGINS]),
    maxRequestBytes: e.KEYGATE_MAX_REQUEST_BYTES,
    maxTimeoutMs: e.KEYGATE_MAX_TIMEOUT_MS,
    shutdownTimeoutMs: e.KEYGATE_SHUTDOWN_TIMEOUT_MS,
    streams: Object.freeze({
      http2MaxConcurrentStreams: e.KEYGATE_HTTP2_MAX_CONCURRENT_STREAMS,
      maxConnectionsPerIp: e.KEYGATE_MAX_CONNECTIONS_PER_IP,
      maxWatchStreamsPerIp: e.KEYGATE_MAX_WATCH_STREAMS_PER_IP,
      watchMaxAgeMs: e.KEYGATE_WATCH_MAX_AGE_MS,
    }),
    logLevel: e.KEYGATE_LOG_LEVEL,
    logSampleEvery: e.KEYGATE_LOG_SAMPLE_EVERY,
    databaseUrl: e.DATABASE_URL,
    dbPoolSize: e.KEYGATE_DB_POOL_SIZE,
    dataDir: e.KEYGATE_DATA_DIR,
    // The embedded database belongs to this process, so it is always migrated on start; an
    // external one is migrated by `keygate migrate` unless asked for here.
    migrateOnStart: e.KEYGATE_MIGRATE_ON_START ?? e.DATABASE_URL === undefined,
    bootstrap: e.KEYGATE_BOOTSTRAP,
    smtp,
    mailFrom: e.KEYGATE_MAIL_FROM,
    // With the web app on, links in emails open it.
    publicUrl,
    ui: e.KEYGATE_UI,
    webauthn: Object.freeze({ rpId, origins: Object.freeze([...webauthnOrigins]) }),
    issuer: e.KEYGATE_ISSUER ?? ownUrl,
    audience: e.KEYGATE_AUDIENCE,
    jwtAlgorithm: e.KEYGATE_JWT_ALGORITHM,
    keyEncryptionKey: e.KEYGATE_KEY_ENCRYPTION_KEY,
    tokenSecret: e.KEYGATE_TOKEN_SECRET,
    bcryptCost: e.KEYGATE_BCRYPT_COST,
    hashWorkers: e.KEYGATE_HASH_WORKERS ?? Math.max(1, availableParallelism()),
    hashWorkerNice: e.KEYGATE_HASH_WORKER_NICE,
    refreshGraceSeconds: e.KEYGATE_REFRESH_GRACE_SECONDS,
    allowWorkspaceCreation: e.KEYGATE_ALLOW_WORKSPACE_CREATION,
    workspaceDefaults: Object.freeze({
      ...builtInWorkspaceDefaults,
      ...e.KEYGATE_WORKSPACE_DEFAULTS,
    }),
    mailTemplatesDir: e.KEYGATE_MAIL_TEMPLATES_DIR,
    rateLimits: Object.freeze(
      developmentLimits
        ? developmentRateLimits
        : { ...builtInRateLimits, ...e.KEYGATE_RATE_LIMITS },
    ),
    developmentRateLimits: developmentLimits,
    trustedProxies: Object.freeze([...e.KEYGATE_TRUSTED_PROXIES]),
    ipv6PrefixLength: e.KEYGATE_IPV6_PREFIX_LENGTH,
    adminKeyMaxLifetimeDays: e.KEYGATE_ADMIN_KEY_MAX_LIFETIME_DAYS,
    oidcLogoutPrivateNetworks:
      e.KEYGATE_OIDC_LOGOUT_PRIVATE_NETWORKS ?? e.DATABASE_URL === undefined,
    lockout: Object.freeze({
      threshold: e.KEYGATE_LOCKOUT_THRESHOLD,
      baseSeconds: e.KEYGATE_LOCKOUT_BASE_SECONDS,
      maxSeconds: e.KEYGATE_LOCKOUT_MAX_SECONDS,
    }),
    revocation: Object.freeze({
      resyncMs: e.KEYGATE_REVOCATION_RESYNC_MS,
      maxStalenessMs: e.KEYGATE_REVOCATION_MAX_STALENESS_MS,
      heartbeatMs: e.KEYGATE_REVOCATION_HEARTBEAT_MS,
    }),
    introspectionCacheSize: e.KEYGATE_INTROSPECTION_CACHE_SIZE,
    metrics: e.KEYGATE_METRICS,
    metricsHost: e.KEYGATE_METRICS_HOST,
    metricsPort: e.KEYGATE_METRICS_PORT,
    otlpEndpoint: e.KEYGATE_OTLP_ENDPOINT,
    traceSampleRatio: e.KEYGATE_TRACE_SAMPLE_RATIO,
    mailLeaseMs: e.KEYGATE_MAIL_LEASE_MS,
    mailConcurrency: e.KEYGATE_MAIL_CONCURRENCY,
    directDatabaseUrl: e.KEYGATE_DIRECT_DATABASE_URL ?? e.DATABASE_URL,
    signingKeyRotationDays: e.KEYGATE_SIGNING_KEY_ROTATION_DAYS,
    sweepIntervalMs: e.KEYGATE_SWEEP_INTERVAL_MS,
  });
}

/** The names of every variable read, for the table check of docs/configuration.md. */
export const settingNames: readonly string[] = Object.keys(envSchema.shape);
