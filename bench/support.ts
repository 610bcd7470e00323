/**
 * What the service benchmarks share: a real Keygate started with startKeygate on a scratch
 * database (a fresh database on the PostgreSQL of DATABASE_URL, or embedded PGlite), its log
 * written to /dev/null at the configured level, and the statistics they print.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";
import { type Keygate, startKeygate } from "../src/app.js";
import { type Config, configFromEnv, rateLimitNames } from "../src/config.js";
import { loadSecrets } from "../src/crypto/secrets.js";
import { createLogger, logDestination } from "../src/log.js";

export interface BenchKeygate extends Keygate {
  readonly config: Config;
  /** The deployment admin key printed on the first start. */
  readonly rootKey: string;
  readonly workspaceId: string;
  stop(): Promise<void>;
}

/** A scratch database on the server of `serverUrl`, dropped by `drop`. */
export async function scratchDatabase(
  serverUrl: string,
  prefix = "keygate_bench",
): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `${prefix}_${randomBytes(5).toString("hex")}`;
  const admin = async (statement: string) => {
    const client = new pg.Client({ connectionString: serverUrl });
    await client.connect();
    try {
      await client.query(statement);
    } finally {
      await client.end();
    }
  };
  await admin(`CREATE DATABASE ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/** Where the benchmarks run: the PostgreSQL of DATABASE_URL, or embedded PGlite. */
export const benchDatabase = (): string =>
  process.env.DATABASE_URL ? "external PostgreSQL" : "embedded PGlite";

/**
 * The rate limits and the lockout of a bench server, lifted; a peer (startBenchPeer) that
 * takes the benchmark's calls needs them too.
 */
export const liftedLimits: Readonly<Record<string, string>> = {
  KEYGATE_RATE_LIMITS: JSON.stringify(
    Object.fromEntries(rateLimitNames.map((n) => [n, { limit: 100_000, window_seconds: 1 }])),
  ),
  KEYGATE_LOCKOUT_THRESHOLD: "1000",
};

/**
 * A real Keygate on a loopback port. Rate limits and the lockout are lifted (a benchmark logs
 * in far more often than a person would); everything else is the defaults unless KEYGATE_*
 * variables in the environment or `env` say otherwise.
 */
export async function startBenchKeygate(env: Record<string, string> = {}): Promise<BenchKeygate> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-bench-"));
  const external = process.env.DATABASE_URL
    ? await scratchDatabase(process.env.DATABASE_URL)
    : undefined;
  const config = configFromEnv({
    KEYGATE_PORT: "0",
    KEYGATE_METRICS_PORT: "0",
    KEYGATE_DATA_DIR: dataDir,
    KEYGATE_LOG_LEVEL: "info",
    KEYGATE_MIGRATE_ON_START: "true",
    KEYGATE_SHUTDOWN_TIMEOUT_MS: "2000",
    ...liftedLimits,
    // KEYGATE_* settings in the environment apply to the benchmarked server.
    ...Object.fromEntries(
      Object.entries(process.env).filter(([k, v]) => k.startsWith("KEYGATE_") && v !== undefined),
    ),
    ...(external
      ? {
          DATABASE_URL: external.url,
          KEYGATE_KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
          KEYGATE_TOKEN_SECRET: randomBytes(32).toString("base64"),
          KEYGATE_ISSUER: process.env.KEYGATE_ISSUER ?? "http://127.0.0.1:0",
          // Mail goes to an SMTP server when the environment or `env` names one.
          ...([process.env, env].some((e) => e.KEYGATE_SMTP_URL || e.KEYGATE_SMTP_HOST)
            ? {}
            : { KEYGATE_MAIL_DEV_OUTBOX: "true" }),
        }
      : {}),
    ...env,
  });
  const keygate = await startKeygate(config, benchLogger(config.logLevel));
  const bootstrapped = keygate.bootstrapped;
  if (!bootstrapped) throw new Error("the scratch database was not bootstrapped");
  return Object.assign(Object.create(keygate) as Keygate, keygate, {
    config,
    rootKey: bootstrapped.adminKey,
    workspaceId: bootstrapped.workspaceId,
    async stop() {
      await keygate.close();
      await external?.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  });
}

/**
 * A second instance on the first one's database with the same secrets, as another replica
 * would run, with `env` on top (KEYGATE_INTROSPECTION_CACHE_SIZE=0, ...).
 */
export async function startBenchPeer(
  first: BenchKeygate,
  env: Record<string, string>,
): Promise<Keygate> {
  const secrets = await loadSecrets(first.config);
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-bench-peer-"));
  const config: Config = {
    ...configFromEnv({
      KEYGATE_PORT: "0",
      KEYGATE_METRICS_PORT: "0",
      KEYGATE_DATA_DIR: dataDir,
      KEYGATE_LOG_LEVEL: first.config.logLevel,
      DATABASE_URL: first.database.url,
      KEYGATE_KEY_ENCRYPTION_KEY: secrets.keyEncryptionKey.toString("base64"),
      KEYGATE_TOKEN_SECRET: secrets.tokenSecret.toString("base64"),
      KEYGATE_ISSUER: first.config.issuer,
      ...(env.KEYGATE_SMTP_URL || env.KEYGATE_SMTP_HOST ? {} : { KEYGATE_MAIL_DEV_OUTBOX: "true" }),
      KEYGATE_MIGRATE_ON_START: "false",
      KEYGATE_BOOTSTRAP: "false",
      KEYGATE_SHUTDOWN_TIMEOUT_MS: "2000",
      ...env,
    }),
    // Tokens name the first instance's audience; a replica shares it.
    audience: first.config.audience,
  };
  const peer = await startKeygate(config, benchLogger(config.logLevel));
  return Object.assign(Object.create(peer) as Keygate, peer, {
    async close() {
      await peer.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  });
}

/** The service's own logger at its level, to BENCH_LOG_FILE or /dev/null, as it writes stdout. */
function benchLogger(level: string) {
  return createLogger(level, logDestination(process.env.BENCH_LOG_FILE ?? "/dev/null"));
}

const collectGarbage: (() => void) | undefined = (() => {
  try {
    v8.setFlagsFromString("--expose-gc");
    return runInNewContext("gc") as () => void;
  } catch {
    return undefined;
  }
})();

/**
 * This process's memory in MB after a full garbage collection (the collector is exposed at
 * run time, so no flag is needed on the command line).
 */
export const memorySample = Object.assign(
  () => {
    collectGarbage?.();
    const m = process.memoryUsage();
    const mb = (bytes: number) => round(bytes / 2 ** 20, 1);
    return {
      rssMB: mb(m.rss),
      heapMB: mb(m.heapUsed),
      heapCommittedMB: mb(m.heapTotal),
      externalMB: mb(m.external),
    };
  },
  { gcExposed: collectGarbage !== undefined },
);

/** Sorted-sample quantile. */
export function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

export const median = (xs: readonly number[]): number =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

export const round = (x: number, digits = 0): number => Number(x.toFixed(digits));

/**
 * A figure relative to what it is measured against (a physical limit, or a peer), for the
 * summary chart: `value` times the reference, with the target when there is one.
 */
export interface Ratio {
  label: string;
  value: number;
  reference: string;
  target?: { atLeast?: number; atMost?: number };
}

/** "met" or "NOT MET", for the targets every benchmark prints. */
export const verdict = (met: boolean): string => (met ? "met" : "NOT MET");

/**
 * Operations per second of `op` with `concurrency` in flight for about `ms`, or until `done`
 * says so (closed loop).
 */
export async function closedLoop(
  op: () => Promise<unknown>,
  ms: number,
  concurrency: number,
  done: () => boolean = () => false,
): Promise<{ perSecond: number; latencies: number[] }> {
  const latencies: number[] = [];
  const started = performance.now();
  const deadline = started + ms;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline && !done()) {
        const t = performance.now();
        await op();
        latencies.push(performance.now() - t);
      }
    }),
  );
  const perSecond = latencies.length / ((performance.now() - started) / 1000);
  return { perSecond, latencies: latencies.sort((a, b) => a - b) };
}

/**
 * Open loop: starts `op` at a fixed rate for about `ms`, whatever is still in flight (the
 * arrivals do not wait for answers). Timers fire on whole milliseconds, so each tick starts
 * the calls that fell due since the last one; latency is counted from each call's start.
 */
export async function openLoop(
  op: () => Promise<unknown>,
  perSecond: number,
  ms: number,
): Promise<{ started: number; perSecond: number; latencies: number[]; maxInFlight: number }> {
  const latencies: number[] = [];
  const pending: Promise<void>[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  let issued = 0;
  const t0 = performance.now();
  const total = Math.floor((perSecond * ms) / 1000);
  while (issued < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) * perSecond) / 1000) + 1);
    for (; issued < due; issued++) {
      const t = performance.now();
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      pending.push(
        op().then(() => {
          inFlight--;
          latencies.push(performance.now() - t);
        }),
      );
    }
    const next = t0 + ((issued + 1) * 1000) / perSecond;
    await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
  }
  await Promise.all(pending);
  return {
    started: issued,
    perSecond: issued / ((performance.now() - t0) / 1000),
    latencies: latencies.sort((a, b) => a - b),
    maxInFlight,
  };
}

/**
 * The child side of `loadGenerator`: answers each job the parent sends with what `drive`
 * resolves to (or `{ error }`), says `ready` when it listens, and leaves when the parent lets
 * go (normally, so that a --cpu-prof profile gets written).
 */
export function serveJobs<J>(
  drive: (job: J) => Promise<unknown>,
  options: { ready?: unknown; onDisconnect?: () => void } = {},
): void {
  process.on("message", (job: J) => {
    drive(job).then(
      (figures) => process.send?.(figures as object),
      (error: unknown) => process.send?.({ error: String(error) }),
    );
  });
  process.on("disconnect", options.onDisconnect ?? (() => process.exit(0)));
  process.send?.((options.ready ?? "ready") as object);
}

export interface LoadGenerator {
  child: ChildProcess;
  /** What the child sent first, when it was ready. */
  ready: unknown;
  ask<T>(job: object): Promise<T>;
}

/** A forked load generator (through tsx), answering one job at a time. */
export async function loadGenerator(script: string): Promise<LoadGenerator> {
  // A profiled run (--cpu-prof) profiles the load generator too.
  const profile = process.execArgv.filter((a) => a.startsWith("--cpu-prof"));
  const child = fork(script, ["client"], { execArgv: ["--import", "tsx", ...profile] });
  const ready: unknown = await new Promise((resolve) => child.once("message", resolve));
  return {
    child,
    ready,
    ask: <T>(job: object) =>
      new Promise<T>((resolve, reject) => {
        const exited = (code: number | null) =>
          reject(new Error(`the load generator exited (${code})`));
        child.once("exit", exited);
        child.once("message", (m: { error?: string }) => {
          child.off("exit", exited);
          if (m && typeof m === "object" && "error" in m) reject(new Error(String(m.error)));
          else resolve(m as T);
        });
        child.send(job);
      }),
  };
}

/**
 * What a gateway holds against a bench server: an admin key with workspace-wide reads and the
 * introspect permission, nothing more, and the access token of a member it is to introspect.
 */
export async function benchGateway(
  keygate: Pick<BenchKeygate, "url" | "rootKey" | "workspaceId">,
): Promise<{ key: string; token: string }> {
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  const admin = createClient(AdminService, transport);
  const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
  const { secret: key } = await admin.createAdminKey(
    {
      name: "bench gateway",
      workspaceId: keygate.workspaceId,
      role: AdminKeyRole.READ_ONLY,
      introspect: true,
    },
    root,
  );
  const email = `bench-gateway-${randomBytes(4).toString("hex")}@example.test`;
  const password = "correct horse battery staple";
  await admin.provisionUser(
    { email, password, workspaceId: keygate.workspaceId, role: Role.MEMBER, emailVerified: true },
    root,
  );
  const login = await createClient(AuthService, transport).login({
    email,
    password,
    workspaceId: keygate.workspaceId,
  });
  if (login.result.case !== "tokens") throw new Error("login did not answer tokens");
  return { key, token: login.result.value.accessToken };
}
