import type { AddressInfo } from "node:net";
import { keygateHandlers } from "./app-handlers.js";
import { type Clock, systemClock } from "./clock.js";
import type { Config } from "./config.js";
import { PasswordHasher, PasswordPolicy } from "./crypto/password.js";
import { loadSecrets } from "./crypto/secrets.js";
import { TotpSecretKey } from "./crypto/totp-secret-key.js";
import { defaultMigrationsDir, loadMigrations, migrate, missingMigrations } from "./db/migrate.js";
import { type Database, openDatabase } from "./db/pool.js";
import { AdminKeyAuthenticator } from "./domain/admin-auth.js";
import { type BootstrapResult, bootstrap } from "./domain/bootstrap.js";
import type { AdminDeps, AuthDeps } from "./domain/deps.js";
import { Introspector } from "./domain/introspection.js";
import { Lockout } from "./domain/lockout.js";
import { BackchannelLogoutSender } from "./domain/oauth/backchannel.js";
import { providerFeatures } from "./domain/oauth/registration.js";
import { RateLimiter } from "./domain/rate-limits.js";
import { RevocationState } from "./domain/revocations.js";
import { requireAdminFactors } from "./domain/second-step.js";
import { authenticate } from "./domain/sessions.js";
import { SigningKeys } from "./domain/signing-keys.js";
import { accessOf } from "./handlers/access.js";
import { createMetricsListener } from "./http/metrics-listener.js";
import { defaultWebAppDir, loadWebApp, type WebApp } from "./http/web-app.js";
import { adminAuthnInterceptor } from "./interceptors/admin-authn.js";
import { authnInterceptor } from "./interceptors/authn.js";
import { streamLimitInterceptor } from "./interceptors/stream-limits.js";
import type { Logger } from "./log.js";
import { createMailer, type Mailer } from "./mail/mailer.js";
import { enqueueMail, MailBodyKey, OutboxSender } from "./mail/outbox.js";
import { MailTemplates } from "./mail/templates.js";
import { Maintenance } from "./maintenance.js";
import { instanceMetrics } from "./metrics-sources.js";
import { Readiness } from "./readiness.js";
import { findWorkspaceBySlug } from "./repositories/workspaces.js";
import { buildServer, type ServerDeps } from "./server.js";
import {
  databaseStartupError,
  describeDatabase,
  listenStartupError,
  migrationsPendingError,
} from "./startup-failure.js";
import { StopStack } from "./stop-stack.js";
import { Tracing } from "./tracing.js";

export interface Keygate {
  readonly address: AddressInfo;
  /** http(s)://host:port of the listener. */
  readonly url: string;
  /** http://host:port of the metrics listener (GET /metrics), when metrics are on. */
  readonly metricsUrl: string | undefined;
  /** http(s)://host:port/ui/ when the web app is on. */
  readonly webAppUrl: string | undefined;
  readonly database: Database;
  readonly mailer: Mailer;
  /** Set on the first start only: the default workspace and its admin key in clear. */
  readonly bootstrapped: BootstrapResult | undefined;
  /** Graceful stop: readiness 503, new calls refused, in-flight calls drained, pool closed. */
  close(): Promise<void>;
}

/**
 * An instance's parts, built and started (database, workers, feeds, sweeps) before anything
 * listens: what buildServer takes but the web app, and what stops them again.
 */
export interface KeygateServices {
  readonly database: Database;
  readonly mailer: Mailer;
  readonly server: Omit<ServerDeps, "webApp">;
  /** Everything started for these parts, stopped in reverse order. */
  readonly stops: StopStack;
}

/**
 * Opens the database, migrates when configured, and builds the services with their handlers
 * and interceptors; startKeygate serves them, tests also over an in-memory transport.
 */
export async function composeKeygate(
  config: Config,
  logger: Logger,
  options: { migrationsDir?: string; mailer?: Mailer; clock?: Clock } = {},
): Promise<KeygateServices> {
  const migrations = await loadMigrations(options.migrationsDir ?? defaultMigrationsDir);
  const database = await openDatabase(config).catch((error: unknown) => {
    throw databaseStartupError(error, config) ?? error;
  });
  const stops = new StopStack(logger);
  stops.add("database", () => database.close());
  try {
    if (config.migrateOnStart) {
      const applied = await migrate(
        database.embedded ? database.url : (config.directDatabaseUrl ?? database.url),
        migrations,
      );
      if (applied.length > 0)
        logger.info({ migrations: applied.map((m) => m.name) }, "migrations applied");
    } else {
      // Code on a schema it does not know would fail on its first query, or later on some
      // call: a start that cannot work says so now, naming what to run.
      const missing = await missingMigrations(database.pool, migrations);
      if (missing.length > 0) {
        const names = missing.map((m) => m.name);
        throw migrationsPendingError(
          describeDatabase(config),
          `${names.length} of ${migrations.length} migrations missing, the first ${names[0]}`,
        );
      }
    }
    const readiness = new Readiness(database.pool, migrations, logger);
    const clock = options.clock ?? systemClock;
    const secrets = await loadSecrets(config);
    const signingKeys = await SigningKeys.open({
      pool: database.pool,
      keyEncryptionKey: secrets.keyEncryptionKey,
      algorithm: config.jwtAlgorithm,
      issuer: config.issuer,
      audience: config.audience,
      clock,
      logger,
    });
    // ID tokens: RS256, the one algorithm every OpenID relying party must accept.
    const idTokenKeys = await SigningKeys.open({
      pool: database.pool,
      keyEncryptionKey: secrets.keyEncryptionKey,
      purpose: "id_token",
      algorithm: "RS256",
      issuer: config.issuer,
      audience: config.audience,
      clock,
      logger,
    });
    const jwks = {
      jwks: async () => {
        const [access, id] = await Promise.all([signingKeys.jwks(), idTokenKeys.jwks()]);
        return { keys: [...access.keys, ...id.keys] };
      },
    };
    const revocations = new RevocationState({
      pool: database.pool,
      // PGlite's wire server does not deliver notifications: the embedded (single-instance)
      // database is read on this instance's own changes and by the periodic resync.
      listenUrl: database.embedded ? undefined : (config.directDatabaseUrl ?? database.url),
      clock,
      logger,
      resyncMs: config.revocation.resyncMs,
      maxStalenessMs: config.revocation.maxStalenessMs,
    });
    await revocations.start();
    stops.add("revocation feed", () => revocations.stop());
    // A signing key revoked on any instance: stop signing with it and unpublish it here too.
    revocations.subscribe((row) => {
      if (row.kind === "signing_key") {
        void signingKeys.onRevoked();
        void idTokenKeys.onRevoked();
      }
    });
    const hasher = new PasswordHasher({
      cost: config.bcryptCost,
      workers: config.hashWorkers,
      nice: config.hashWorkerNice,
    });
    stops.add("password hash workers", () => hasher.close());
    const policy = await PasswordPolicy.load();
    const templates = await MailTemplates.load(config.mailTemplatesDir);
    const mailer = options.mailer ?? createMailer(config, logger);
    stops.add("mailer", () => mailer.close());
    const productName = "Keygate";
    const mailBodyKey = new MailBodyKey(secrets.keyEncryptionKey);
    const sender = new OutboxSender({
      pool: database.pool,
      mailer,
      logger,
      bodyKey: mailBodyKey,
      leaseMs: config.mailLeaseMs,
      concurrency: config.mailConcurrency,
    });
    sender.start();
    stops.add("outbox sender", () => sender.stop());
    const authDeps: AuthDeps = {
      pool: database.pool,
      clock,
      logger,
      tokenSecret: secrets.tokenSecret,
      totpSecrets: new TotpSecretKey(secrets.keyEncryptionKey),
      hasher,
      policy,
      tokens: signingKeys,
      revocations,
      mail: {
        enqueue: (tx, input) =>
          enqueueMail(tx, templates, mailBodyKey, {
            ...input,
            vars: { product: productName, ...input.vars },
          }),
        wake: () => sender.wake(),
      },
      limiter: new RateLimiter(database.pool, clock, config.rateLimits, {
        ipv6PrefixLength: config.ipv6PrefixLength,
      }),
      lockout: new Lockout(database.pool, clock, config.lockout),
      settings: {
        workspaceDefaults: config.workspaceDefaults,
        allowWorkspaceCreation: config.allowWorkspaceCreation,
        refreshGraceSeconds: config.refreshGraceSeconds,
        publicUrl: config.publicUrl,
        productName,
        webauthn: config.webauthn,
        adminKeyMaxLifetimeDays: config.adminKeyMaxLifetimeDays,
      },
    };
    const adminKeys = new AdminKeyAuthenticator(database.pool, clock);
    const adminDeps: AdminDeps = { ...authDeps, signingKeys, idTokenKeys, adminKeys };
    const issuerBase = config.issuer.replace(/\/+$/, "");
    const providerDeps = {
      ...authDeps,
      issuerBase,
      // The app's page, like the links in emails: the hosted /ui/ or a workspace's own app.
      signInUrl: `${config.publicUrl.replace(/\/+$/, "")}/authorize`,
      audience: config.audience,
      idTokens: idTokenKeys,
    };
    const introspector = new Introspector({
      pool: database.pool,
      clock,
      tokenSecret: secrets.tokenSecret,
      issuer: config.issuer,
      audience: config.audience,
      cacheSize: config.introspectionCacheSize,
      tokens: signingKeys,
      revocations,
    });
    const logouts = new BackchannelLogoutSender({
      pool: database.pool,
      clock,
      logger,
      issuerBase,
      idTokens: idTokenKeys,
      allowPrivateNetworks: config.oidcLogoutPrivateNetworks,
    });
    logouts.start();
    stops.add("back-channel logout sender", () => logouts.stop());
    // A session ended on any instance: the grants among them owe their clients a logout.
    revocations.subscribe((row) => {
      if (row.kind === "session" || row.kind === "user" || row.kind === "membership") {
        logouts.wake();
      }
    });
    const maintenance = new Maintenance({
      pool: database.pool,
      clock,
      logger,
      intervalMs: config.sweepIntervalMs,
      signingKeys: {
        rotateIfDue: async (maxAgeMs: number) => {
          await signingKeys.rotateIfDue(maxAgeMs);
          await idTokenKeys.rotateIfDue(maxAgeMs);
        },
      },
      rotationMs: config.signingKeyRotationDays * 86_400_000,
    });
    maintenance.start();
    stops.add("maintenance", () => maintenance.stop());
    const metrics = config.metrics
      ? instanceMetrics({ pool: database.pool, sender, hasher, revocations, introspector })
      : undefined;
    const tracing = config.otlpEndpoint
      ? new Tracing({ endpoint: config.otlpEndpoint, sampleRatio: config.traceSampleRatio })
      : undefined;
    if (tracing) stops.add("tracing", () => tracing.shutdown());
    const server: KeygateServices["server"] = {
      config,
      logger,
      metrics,
      tracing,
      readiness,
      jwks,
      provider: {
        provider: providerDeps,
        providerFeatures: (id) => providerFeatures(providerDeps, id),
      },
      oauth: {
        issuer: config.issuer,
        introspector,
        authenticate: (secret, beforeLookup) => adminKeys.authenticate(secret, beforeLookup),
        limitClientLookup: (ip) => authDeps.limiter.hit(null, [["oauth_client_ip", ip]]),
      },
      handlers: keygateHandlers({
        config,
        clock,
        readiness,
        authDeps,
        adminDeps,
        providerDeps,
        issuerBase,
        jwks,
        introspector,
        pool: database.pool,
        revocations,
      }),
      interceptors: [
        // Before authentication: a refused stream costs no admin-key lookup.
        streamLimitInterceptor({
          methods: new Set([
            "grpc.health.v1.Health/Watch",
            "keygate.v1.TokenIntrospectionService/WatchRevocations",
          ]),
          maxPerIp: config.streams.maxWatchStreamsPerIp,
          ipv6PrefixLength: config.ipv6PrefixLength,
        }),
        adminAuthnInterceptor({
          access: accessOf,
          authenticateAdminKey: (secret) => adminKeys.authenticate(secret),
          authenticateUser: (token, header) => authenticate(authDeps, token, header),
          checkUser: (principal) => requireAdminFactors(authDeps, principal),
        }),
        authnInterceptor({
          authenticate: (token, header) => authenticate(authDeps, token, header),
          access: accessOf,
        }),
      ],
    };
    return { database, mailer, server, stops };
  } catch (error) {
    // Nothing started above outlives a failed start: not a listener, worker, timer or
    // connection.
    await stops.stopAll(false);
    throw databaseStartupError(error, config) ?? error;
  }
}

/** Opens the database, migrates when configured, bootstraps, and listens. */
export async function startKeygate(
  config: Config,
  logger: Logger,
  options: { migrationsDir?: string; mailer?: Mailer; clock?: Clock; webAppDir?: string } = {},
): Promise<Keygate> {
  const services = await composeKeygate(config, logger, options);
  const { database, mailer, stops } = services;
  const { metrics } = services.server;
  try {
    // The page starts from the bootstrapped workspace, when there is one; on a first start
    // that workspace only exists once the listeners are bound (below), and the page is
    // loaded again then.
    const loadPage = async () => {
      const start = await findWorkspaceBySlug(database.pool, "default");
      return loadWebApp(options.webAppDir ?? defaultWebAppDir, {
        workspace: start ? { id: start.id, slug: start.slug } : undefined,
      });
    };
    let page = config.ui ? await loadPage() : undefined;
    const webApp: WebApp | undefined = page && {
      serve: (req, res) => page?.serve(req, res) ?? false,
    };
    const server = buildServer({ ...services.server, webApp });
    // On close, calls in flight get the shutdown timeout; after a failed start, none.
    stops.add("service listener", (graceful) =>
      server.close(graceful ? config.shutdownTimeoutMs : 0),
    );
    const metricsListener = metrics ? createMetricsListener(metrics, logger) : undefined;
    if (metricsListener) stops.add("metrics listener", () => metricsListener.close());
    const address = await server.listen(config.port, config.host).catch((error: unknown) => {
      throw listenStartupError(error, "service", config.host, config.port) ?? error;
    });
    const metricsAddress = await metricsListener
      ?.listen(config.metricsPort, config.metricsHost)
      .catch((error: unknown) => {
        throw listenStartupError(error, "metrics", config.metricsHost, config.metricsPort) ?? error;
      });
    const metricsUrl = metricsAddress && `http://${hostPort(metricsAddress)}`;
    // Last, once nothing else can fail: the first admin key exists only in this process's
    // answer, so a start that fails after creating it would lose it for good (the next start
    // sees the workspace and creates nothing).
    const bootstrapped = config.bootstrap ? await bootstrap(database.pool) : undefined;
    if (bootstrapped && config.ui) page = await loadPage();
    const url = `${config.tls ? "https" : "http"}://${hostPort(address)}`;
    const webAppUrl = config.ui ? `${url}/ui/` : undefined;
    logger.info({ url, webAppUrl, metricsUrl, embedded: database.embedded }, "keygate listening");
    if (config.developmentRateLimits) {
      const login = config.rateLimits.login_ip;
      logger.warn(
        { rateLimits: "development" },
        `embedded database: development rate limits, ten times the production ones ` +
          `(login ${login.limit} per ${login.window_seconds / 60} min per IP); ` +
          `KEYGATE_RATE_LIMITS='{}' gives the production limits`,
      );
    }
    return {
      address,
      url,
      metricsUrl,
      database,
      mailer,
      webAppUrl,
      bootstrapped,
      close: () => stops.stopAll(true),
    };
  } catch (error) {
    await stops.stopAll(false);
    throw databaseStartupError(error, config) ?? error;
  }
}

function hostPort(address: AddressInfo): string {
  return `${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
}
