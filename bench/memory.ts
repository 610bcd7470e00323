/**
 * Memory under a long run: the serving process's resident set and heap while a million
 * Introspect calls go through the access tokens of a hundred thousand sessions, a tenth of them
 * revoked. The token cache (KEYGATE_INTROSPECTION_CACHE_SIZE, 100,000 by default) fills during
 * the first pass over the tokens, so what comes after the warm-up is the steady state; its
 * growth is what leaks would show as.
 *
 *   npm run bench -- memory [introspections=1000000] [sessions=100000] [concurrency=32]
 *
 * Sessions are written straight into the database in one INSERT and their access tokens signed
 * with the instance's own signing key (a hundred thousand Logins at bcrypt cost 10 would take
 * an hour of hashing on two cores and measure nothing about memory); they are then real
 * sessions to Keygate: revoked through RevokeToken and introspected over gRPC from a separate
 * load-generator process, so the tokens held by the caller are not in the measured process.
 *
 * Target (the benchmarks issue): flat after warm-up, taken here as the resident set growing by
 * at most 10% and the heap after a full garbage collection by at most 10% from the end of the
 * warm-up to the end of the run.
 */
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { createPool } from "slonik";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";
import { systemClock } from "../src/clock.js";
import type { JwtAlgorithm } from "../src/crypto/jwt-keys.js";
import { loadSecrets } from "../src/crypto/secrets.js";
import { SigningKeys } from "../src/domain/signing-keys.js";
import { createLogger } from "../src/log.js";
import type { LoadFigures } from "./introspect.js";
import {
  benchDatabase,
  closedLoop,
  loadGenerator,
  memorySample,
  quantile,
  type Ratio,
  round,
  serveJobs,
  startBenchKeygate,
  verdict,
} from "./support.js";

const self = fileURLToPath(import.meta.url);

type Job =
  | {
      kind: "seed";
      databaseUrl: string;
      keyEncryptionKey: string;
      signing: { algorithm: JwtAlgorithm; issuer: string; audience: string };
      workspaceId: string;
      userIds: string[];
      sessions: number;
    }
  | { kind: "revoke"; url: string; key: string; every: number; concurrency: number }
  | { kind: "introspect"; url: string; key: string; calls: number; concurrency: number };

// ---- the load-generator child: holds the tokens, makes the calls ----

async function client(): Promise<void> {
  const tokens: string[] = [];
  let next = 0;
  const introspection = (url: string) =>
    createClient(TokenIntrospectionService, createGrpcTransport({ baseUrl: url }));
  const drive = async (job: Job): Promise<unknown> => {
    if (job.kind === "seed") return seed(job, tokens);
    const api = introspection(job.url);
    const options = { headers: { authorization: `Bearer ${job.key}` } };
    if (job.kind === "revoke") {
      const victims = tokens.filter((_, i) => i % job.every === 0);
      let i = 0;
      await closedLoop(
        async () => {
          const token = victims[i++];
          if (token) await api.revokeToken({ token }, options);
        },
        Number.POSITIVE_INFINITY,
        job.concurrency,
        () => i >= victims.length,
      );
      return { revoked: victims.length };
    }
    // Introspect: token n of the calls is tokens[n mod count], each answer checked.
    let issued = 0;
    const run = await closedLoop(
      async () => {
        const n = next++;
        issued++;
        const res = await api.introspect({ token: tokens[n % tokens.length] as string }, options);
        const revoked = (n % tokens.length) % revokeEvery === 0;
        if (res.active === revoked) {
          throw new Error(`token ${n % tokens.length} introspected active=${res.active}`);
        }
      },
      Number.POSITIVE_INFINITY,
      job.concurrency,
      () => issued >= job.calls,
    );
    return {
      perSecond: round(run.perSecond, 1),
      p50Ms: round(quantile(run.latencies, 0.5), 3),
      p99Ms: round(quantile(run.latencies, 0.99), 3),
      calls: run.latencies.length,
    } satisfies LoadFigures;
  };
  serveJobs(drive);
}

/**
 * The sessions, in one INSERT as the database owner (row-level security binds the service's
 * role, not the owner), and their access tokens signed with the instance's signing key
 * through a pool of this process's own, kept here: the measured process never holds them.
 */
async function seed(job: Extract<Job, { kind: "seed" }>, tokens: string[]) {
  const owner = new pg.Client({ connectionString: job.databaseUrl });
  await owner.connect();
  let rows: { id: string; user_id: string }[];
  try {
    ({ rows } = await owner.query<{ id: string; user_id: string }>(
      `INSERT INTO sessions (workspace_id, user_id, created_at, last_used_at, idle_expires_at,
                             expires_at, access_expires_at)
       SELECT $1, u, now(), now(), now() + interval '1 day', now() + interval '30 days',
              now() + interval '2 hours'
       FROM unnest($2::uuid[]) AS u, generate_series(1, $3::int)
       RETURNING id, user_id`,
      [job.workspaceId, job.userIds, Math.ceil(job.sessions / job.userIds.length)],
    ));
  } finally {
    await owner.end();
  }
  const pool = await createPool(job.databaseUrl, { maxPoolSize: 2 });
  try {
    const signer = await SigningKeys.open({
      pool,
      keyEncryptionKey: Buffer.from(job.keyEncryptionKey, "base64"),
      ...job.signing,
      clock: systemClock,
      logger: createLogger("silent"),
    });
    const chunk = 1_000;
    for (let start = 0; start < job.sessions; start += chunk) {
      const signed = await Promise.all(
        rows.slice(start, Math.min(start + chunk, job.sessions)).map((row) =>
          signer.signAccessToken({
            userId: row.user_id,
            workspaceId: job.workspaceId,
            sessionId: row.id,
            role: "member",
            ttlSeconds: 3_600,
          }),
        ),
      );
      tokens.push(...signed.map((t) => t.token));
    }
  } finally {
    await pool.end();
  }
  return { held: tokens.length };
}

/** Every revokeEvery-th session (by position) is revoked before the introspections. */
const revokeEvery = 10;

// ---- the benchmark ----

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const introspections = Number(args[0] ?? 1_000_000);
  const sessions = Number(args[1] ?? 100_000);
  const concurrency = Number(args[2] ?? 32);
  const users = Math.max(1, Math.min(1_000, Math.ceil(sessions / 100)));
  const slices = 10;

  const keygate = await startBenchKeygate();
  const generator = await loadGenerator(self);
  const samples: (ReturnType<typeof memorySample> & { after: string })[] = [];
  const sample = (after: string) => {
    const s = { after, ...memorySample() };
    samples.push(s);
    return s;
  };
  try {
    const transport = createGrpcTransport({ baseUrl: keygate.url });
    const admin = createClient(AdminService, transport);
    const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const workspaceId = keygate.workspaceId;
    const { secret: key } = await admin.createAdminKey(
      { name: "bench gateway", workspaceId, role: AdminKeyRole.READ_ONLY, introspect: true },
      root,
    );
    sample("start");

    // Users without passwords (no hashing), then the sessions (in the load generator).
    const userIds: string[] = [];
    for (let i = 0; i < users; i++) {
      const res = await admin.provisionUser(
        { email: `memory-${i}@example.test`, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
      userIds.push(res.user?.id as string);
    }
    const seedStarted = performance.now();
    const secrets = await loadSecrets(keygate.config);
    await generator.ask({
      kind: "seed",
      databaseUrl: keygate.database.url,
      keyEncryptionKey: secrets.keyEncryptionKey.toString("base64"),
      signing: {
        algorithm: keygate.config.jwtAlgorithm,
        issuer: keygate.config.issuer,
        audience: keygate.config.audience,
      },
      workspaceId,
      userIds,
      sessions,
    } satisfies Job);
    const seedSeconds = round((performance.now() - seedStarted) / 1000, 1);
    sample("sessions created");

    const revoked = await generator.ask<{ revoked: number }>({
      kind: "revoke",
      url: keygate.url,
      key,
      every: revokeEvery,
      concurrency,
    } satisfies Job);
    sample(`${revoked.revoked} sessions revoked`);

    const perSlice = Math.ceil(introspections / slices);
    const rates: LoadFigures[] = [];
    for (let s = 1; s <= slices; s++) {
      rates.push(
        await generator.ask<LoadFigures>({
          kind: "introspect",
          url: keygate.url,
          key,
          calls: perSlice,
          concurrency,
        } satisfies Job),
      );
      sample(`${(s * perSlice).toLocaleString("en")} introspections`);
    }

    // Warm-up: the first pass over every token (the cache fills), or the first slice.
    const warmSlices = Math.max(1, Math.min(slices - 1, Math.ceil(sessions / perSlice)));
    const warm = samples[samples.length - 1 - (slices - warmSlices)] as (typeof samples)[number];
    const last = samples[samples.length - 1] as (typeof samples)[number];
    const rssGrowth = round(last.rssMB / warm.rssMB, 3);
    const heapGrowth = round(last.heapMB / warm.heapMB, 3);
    const calls = rates.reduce((n, r) => n + r.calls, 0);
    const perSecond = round(
      calls / rates.reduce((t, r) => t + r.calls / Math.max(r.perSecond, 1e-9), 0),
      1,
    );

    console.log(
      `\nmemory: the serving process (${benchDatabase()}${
        benchDatabase() === "embedded PGlite" ? ", which runs in it" : ""
      }) across ${calls.toLocaleString("en")} Introspect calls over gRPC (${concurrency} in ` +
        `flight, from a separate process) cycling through the access tokens of ` +
        `${sessions.toLocaleString("en")} sessions, ${revoked.revoked.toLocaleString("en")} of ` +
        `them revoked; token cache ${keygate.config.introspectionCacheSize.toLocaleString("en")} ` +
        `entries; heap after a full GC${memorySample.gcExposed ? "" : " (GC not exposed)"}; ` +
        `${perSecond} calls/s overall, sessions seeded in ${seedSeconds} s`,
    );
    console.table(
      Object.fromEntries(
        samples.map((s) => [
          s.after,
          {
            "RSS MB": s.rssMB,
            "heap MB": s.heapMB,
            "heap committed MB": s.heapCommittedMB,
            "external MB": s.externalMB,
          },
        ]),
      ),
    );
    const targets = {
      "RSS growth after warm-up <= 10%": { figure: `x${rssGrowth}`, met: rssGrowth <= 1.1 },
      "heap growth after warm-up <= 10%": { figure: `x${heapGrowth}`, met: heapGrowth <= 1.1 },
    };
    for (const [t, c] of Object.entries(targets)) {
      console.log(`  ${verdict(c.met).padEnd(7)} ${t}: ${c.figure} (from "${warm.after}")`);
    }
    return {
      introspections: calls,
      sessions,
      revokedSessions: revoked.revoked,
      concurrency,
      database: benchDatabase(),
      introspectionCacheSize: keygate.config.introspectionCacheSize,
      seedSeconds,
      introspectPerSecond: perSecond,
      slices: rates,
      samples,
      warmUpEndsAfter: warm.after,
      rssGrowth,
      heapGrowth,
      targets: Object.fromEntries(Object.entries(targets).map(([t, c]) => [t, c.met])),
      chart: [
        {
          label: "Memory: RSS at the end",
          value: rssGrowth,
          reference: "after warm-up",
          target: { atMost: 1.1 },
        },
        {
          label: "Memory: heap at the end",
          value: heapGrowth,
          reference: "after warm-up",
          target: { atMost: 1.1 },
        },
      ] satisfies Ratio[],
    };
  } finally {
    generator.child.disconnect();
    await keygate.stop();
  }
}

if (process.argv[2] === "client") await client();
