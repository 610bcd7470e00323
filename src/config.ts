import { availableParallelism } from "node:os";
import type { z } from "zod";
import { envSchema, type logLevel } from "./config-env.js";
import {
  builtInRateLimits,
  builtInWorkspaceDefaults,
  developmentRateLimits,
  type RateLimits,
  type WorkspaceSettings,
} from "./workspace-settings.js";

/**
 * Every setting Keygate reads, from KEYGATE_* variables (and DATABASE_URL). Parsed once at
 * start; every problem is reported by name in one message. Tests build a Config directly
 * with `configFromEnv({...})` or by spreading `defaultConfig()`.
 */

export { type Env, parseCidr, settingNames } from "./config-env.js";
export {
  builtInRateLimits,
  builtInWorkspaceDefaults,
  developmentRateLimits,
  type RateLimitName,
  type RateLimitRule,
  type RateLimits,
  rateLimitNames,
  type WorkspaceSettings,
  workspaceSettingsSchema,
} from "./workspace-settings.js";

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
    /** A request's headers and body must arrive within this; a stalled one is closed. */
    readonly requestReceiveTimeoutMs: number;
    /** An HTTP/2 connection with no stream open for this long is closed (GOAWAY). */
    readonly idleConnectionTimeoutMs: number;
  };
  readonly logLevel: z.infer<typeof logLevel>;
  /**
   * One successful hot-path call (Introspect, IntrospectBatch, GetJwks, Envoy Check, health
   * checks, POST /oauth2/introspect) in this many is logged; the rest are counted. 1: all.
   */
  readonly logSampleEvery: number;
  /** Serve the hot unary RPCs through the lean lane (src/http/fast-lane.ts). */
  readonly fastLane: boolean;
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
      requestReceiveTimeoutMs: e.KEYGATE_REQUEST_RECEIVE_TIMEOUT_MS,
      idleConnectionTimeoutMs: e.KEYGATE_IDLE_CONNECTION_TIMEOUT_MS,
    }),
    logLevel: e.KEYGATE_LOG_LEVEL,
    logSampleEvery: e.KEYGATE_LOG_SAMPLE_EVERY,
    fastLane: e.KEYGATE_FAST_LANE,
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

/** Whether `host` is the RP ID or one of its subdomains, as WebAuthn requires of an origin. */
function hostWithin(host: string, rpId: string): boolean {
  return host === rpId || host.endsWith(`.${rpId}`);
}
