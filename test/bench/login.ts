/**
 * Logins per second at the configured bcrypt cost against what the hash workers can do at
 * most: bcryptjs's raw compare rate on one thread (measured in this process, in the same run)
 * times KEYGATE_HASH_WORKERS. While logins saturate the hash pool, the serving process's
 * event-loop lag and the latency of Introspect calls arriving at a steady rate show whether
 * hashing stays off the event loop.
 *
 *   npm run bench -- login [ms per measurement=5000] [logins in flight=8] [introspect/s=100]
 *
 * Targets (the benchmarks issue): logins/s >= 0.85x raw compare rate x hash workers;
 * Introspect p99 < 5 ms while logins saturate the pool.
 */

import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import bcrypt from "bcryptjs";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole, Role } from "../../gen/keygate/v1/types_pb.js";
import {
  benchDatabase,
  closedLoop,
  loadGenerator,
  openLoop,
  quantile,
  type Ratio,
  round,
  startBenchKeygate,
  verdict,
} from "./support.js";

const self = fileURLToPath(import.meta.url);
const password = "correct horse battery staple";

type Job =
  | {
      kind: "login";
      url: string;
      emails: string[];
      workspaceId: string;
      ms: number;
      concurrency: number;
    }
  | { kind: "introspect"; url: string; key: string; token: string; ms: number; rate: number };

interface Figures {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  calls: number;
}

// ---- the load-generator child ----

async function client(): Promise<void> {
  const drive = async (job: Job): Promise<Figures> => {
    if (job.kind === "login") {
      const auth = createClient(
        AuthService,
        createConnectTransport({ baseUrl: job.url, httpVersion: "2" }),
      );
      let i = 0;
      const op = async () => {
        const email = job.emails[i++ % job.emails.length] as string;
        const res = await auth.login({ email, password, workspaceId: job.workspaceId });
        if (res.result.case !== "tokens") throw new Error("login did not answer tokens");
      };
      const run = await closedLoop(op, job.ms, job.concurrency);
      return summary(run.perSecond, run.latencies);
    }
    const introspection = createClient(
      TokenIntrospectionService,
      createGrpcTransport({ baseUrl: job.url }),
    );
    const options = { headers: { authorization: `Bearer ${job.key}` } };
    const op = async () => {
      const res = await introspection.introspect({ token: job.token }, options);
      if (!res.active) throw new Error("the token was not active");
    };
    for (let i = 0; i < 100; i++) await op();
    const run = await openLoop(op, job.rate, job.ms);
    return summary(run.perSecond, run.latencies);
  };
  process.on("message", (job: Job) => {
    drive(job).then(
      (figures) => process.send?.(figures),
      (error: unknown) => process.send?.({ error: String(error) }),
    );
  });
  process.on("disconnect", () => process.exit(0));
  process.send?.("ready");
}

const summary = (perSecond: number, sorted: number[]): Figures => ({
  perSecond: round(perSecond, 1),
  p50Ms: round(quantile(sorted, 0.5), 3),
  p99Ms: round(quantile(sorted, 0.99), 3),
  calls: sorted.length,
});

// ---- the benchmark ----

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 5_000);
  const concurrency = Number(args[1] ?? 8);
  const introspectRate = Number(args[2] ?? 100);

  const keygate = await startBenchKeygate();
  const logins = await loadGenerator(self);
  const introspects = await loadGenerator(self);
  try {
    const { bcryptCost: cost, hashWorkers: workers } = keygate.config;
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const auth = createClient(AuthService, transport);
    const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const workspaceId = keygate.workspaceId;
    const emails = Array.from({ length: concurrency * 4 }, (_, i) => `login-${i}@example.test`);
    for (const email of emails) {
      await admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
    }
    const { secret: key } = await admin.createAdminKey(
      { name: "bench gateway", workspaceId, role: AdminKeyRole.READ_ONLY, introspect: true },
      root,
    );
    const first = await auth.login({ email: emails[0] as string, password, workspaceId });
    if (first.result.case !== "tokens") throw new Error("login did not answer tokens");
    const token = first.result.value.accessToken;

    // One thread's raw compare rate, on what Keygate hands bcrypt (a 64-character digest).
    const digest = "x".repeat(64);
    const hash = bcrypt.hashSync(digest, cost);
    const compareStarted = performance.now();
    let compares = 0;
    while (performance.now() - compareStarted < Math.min(ms, 3_000)) {
      bcrypt.compareSync(digest, hash);
      compares++;
    }
    const rawComparePerSecond = compares / ((performance.now() - compareStarted) / 1000);
    const ceiling = rawComparePerSecond * workers;

    // The same Introspect load alone, then next to saturating logins.
    const introspectJob = { kind: "introspect", url: keygate.url, key, token, ms };
    const alone = await introspects.ask<Figures>({ ...introspectJob, rate: introspectRate });
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    const [login, during] = await Promise.all([
      logins.ask<Figures>({
        kind: "login",
        url: keygate.url,
        emails,
        workspaceId,
        ms,
        concurrency,
      }),
      introspects.ask<Figures>({ ...introspectJob, rate: introspectRate }),
    ]);
    lag.disable();
    const lagP99Ms = round(lag.percentile(99) / 1e6, 3);
    const lagMaxMs = round(lag.max / 1e6, 3);
    const ratio = round(login.perSecond / ceiling, 3);

    console.log(
      `\nlogin: Login over Connect (HTTP/2) from a separate process, ${concurrency} in flight ` +
        `over ${emails.length} users for ${ms} ms (${benchDatabase()}, bcrypt cost ${cost}, ` +
        `${workers} hash workers); Introspect over gRPC at ${introspectRate}/s from another ` +
        `process, alone and during the logins`,
    );
    console.table({
      Login: { "per second": login.perSecond, p50: login.p50Ms, p99: login.p99Ms },
      [`raw bcryptjs compare x ${workers}`]: {
        "per second": round(ceiling, 1),
        p50: round(1000 / rawComparePerSecond, 3),
      },
      "Introspect alone": { "per second": alone.perSecond, p50: alone.p50Ms, p99: alone.p99Ms },
      "Introspect during logins": {
        "per second": during.perSecond,
        p50: during.p50Ms,
        p99: during.p99Ms,
      },
      "event-loop lag during logins": { p99: lagP99Ms, max: lagMaxMs },
    });
    const targets = {
      "logins/s >= 0.85x raw compare x workers": { figure: `${ratio}x`, met: ratio >= 0.85 },
      "Introspect p99 < 5 ms during logins": {
        figure: `${during.p99Ms} ms`,
        met: during.p99Ms < 5,
      },
    };
    for (const [t, c] of Object.entries(targets)) {
      console.log(`  ${verdict(c.met).padEnd(7)} ${t}: ${c.figure}`);
    }
    return {
      ms,
      concurrency,
      introspectRate,
      database: benchDatabase(),
      bcryptCost: cost,
      hashWorkers: workers,
      login,
      rawComparePerSecond: round(rawComparePerSecond, 1),
      ceilingPerSecond: round(ceiling, 1),
      ratio,
      introspectAlone: alone,
      introspectDuringLogins: during,
      eventLoopLagDuringLogins: { p99Ms: lagP99Ms, maxMs: lagMaxMs },
      targets: Object.fromEntries(Object.entries(targets).map(([t, c]) => [t, c.met])),
      chart: [
        {
          label: "Login",
          value: ratio,
          reference: `bcrypt x ${workers} workers`,
          target: { atLeast: 0.85 },
        },
      ] satisfies Ratio[],
    };
  } finally {
    logins.child.disconnect();
    introspects.child.disconnect();
    await keygate.stop();
  }
}

if (process.argv[2] === "client") await client();
