/**
 * Refresh-token rotations per second against what the same PostgreSQL does with pgbench's
 * simple-update transactions (`pgbench -N`, on a scratch database initialised with
 * `pgbench -i`, as many clients as Keygate's pool has connections), measured in turn in the
 * same run. Each rotation is one transaction that locks, retires and inserts a token row and
 * touches its session; the ratio says how much Keygate adds on top of the database's own
 * cost. Only with DATABASE_URL (external PostgreSQL): PGlite has no pgbench.
 *
 *   DATABASE_URL=postgres://... npm run bench -- refresh [ms=5000] [sessions in flight=16]
 *     [rounds=2]
 *
 * Target (the benchmarks issue): rotations/s >= 0.5x pgbench -N TPS.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { Role } from "../gen/keygate/v1/types_pb.js";
import {
  loadGenerator,
  median,
  quantile,
  type Ratio,
  round,
  scratchDatabase,
  serveJobs,
  startBenchKeygate,
  verdict,
} from "./support.js";

const self = fileURLToPath(import.meta.url);
const run$ = promisify(execFile);
const password = "correct horse battery staple";

interface Job {
  url: string;
  refreshTokens: string[];
  ms: number;
}

interface Figures {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** The newest refresh token of each chain, for the next round. */
  refreshTokens: string[];
}

// ---- the load-generator child: one chain of rotations per session, all in flight ----

async function client(): Promise<void> {
  const drive = async (job: Job): Promise<Figures> => {
    const auth = createClient(
      AuthService,
      createConnectTransport({ baseUrl: job.url, httpVersion: "2" }),
    );
    const latencies: number[] = [];
    const tokens = [...job.refreshTokens];
    const started = performance.now();
    const deadline = started + job.ms;
    await Promise.all(
      tokens.map(async (_, i) => {
        while (performance.now() < deadline) {
          const t = performance.now();
          const res = await auth.refresh({ refreshToken: tokens[i] as string });
          if (!res.tokens) throw new Error("refresh answered no tokens");
          tokens[i] = res.tokens.refreshToken;
          latencies.push(performance.now() - t);
        }
      }),
    );
    const perSecond = latencies.length / ((performance.now() - started) / 1000);
    latencies.sort((a, b) => a - b);
    return {
      perSecond,
      p50Ms: quantile(latencies, 0.5),
      p99Ms: quantile(latencies, 0.99),
      refreshTokens: tokens,
    };
  };
  serveJobs(drive);
}

/** pgbench's TPS (without the initial connection time) for `-N` on a scratch database. */
async function pgbench(url: string, clients: number, ms: number): Promise<number> {
  const { stdout } = await run$("pgbench", [
    "-N",
    "-n",
    "-c",
    String(clients),
    "-j",
    "2",
    "-T",
    String(Math.max(1, Math.round(ms / 1000))),
    url,
  ]);
  const tps = stdout.match(/tps = ([\d.]+) \(without initial connection time\)/)?.[1];
  if (!tps) throw new Error(`pgbench printed no TPS:\n${stdout}`);
  return Number(tps);
}

// ---- the benchmark ----

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 5_000);
  const sessions = Number(args[1] ?? 16);
  const rounds = Number(args[2] ?? 2);
  const serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    console.log(
      "\nrefresh: skipped, needs DATABASE_URL (external PostgreSQL) to compare with pgbench",
    );
    return { skipped: "DATABASE_URL is not set" };
  }

  const scratch = await scratchDatabase(serverUrl, "keygate_pgbench");
  const keygate = await startBenchKeygate();
  const generator = await loadGenerator(self);
  try {
    await run$("pgbench", ["-i", "-q", "-s", "1", scratch.url]);
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const auth = createClient(AuthService, transport);
    const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const workspaceId = keygate.workspaceId;
    let refreshTokens: string[] = [];
    for (let i = 0; i < sessions; i++) {
      const email = `refresh-${i}@example.test`;
      await admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
      const res = await auth.login({ email, password, workspaceId });
      if (res.result.case !== "tokens") throw new Error("login did not answer tokens");
      refreshTokens.push(res.result.value.refreshToken);
    }
    const clients = keygate.config.dbPoolSize;
    const rotations: Figures[] = [];
    const tps: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Alternate, so that drift in the machine's load hits both sides alike.
      tps.push(await pgbench(scratch.url, clients, ms));
      const f = await generator.ask<Figures>({ url: keygate.url, refreshTokens, ms });
      refreshTokens = f.refreshTokens;
      rotations.push(f);
    }
    const perSecond = round(median(rotations.map((f) => f.perSecond)), 1);
    const pgbenchTps = round(median(tps), 1);
    const ratio = round(perSecond / pgbenchTps, 3);
    const p50Ms = round(median(rotations.map((f) => f.p50Ms)), 3);
    const p99Ms = round(median(rotations.map((f) => f.p99Ms)), 3);
    console.log(
      `\nrefresh: Refresh over Connect (HTTP/2) from a separate process, ${sessions} sessions ` +
        `rotating at once, ${ms} ms x ${rounds} rounds, medians; pgbench -N with ${clients} ` +
        `clients (Keygate's pool size) on a scratch database of the same PostgreSQL`,
    );
    console.table({
      "Refresh rotations": { "per second": perSecond, p50: p50Ms, p99: p99Ms },
      "pgbench -N": { "per second": pgbenchTps },
    });
    const met = ratio >= 0.5;
    console.log(`  ${verdict(met).padEnd(7)} rotations/s >= 0.5x pgbench -N TPS: ${ratio}x`);
    return {
      ms,
      sessions,
      rounds,
      pgbenchClients: clients,
      rotations: { perSecond, p50Ms, p99Ms },
      pgbenchTps,
      ratio,
      targets: { "rotations/s >= 0.5x pgbench -N TPS": met },
      chart: [
        { label: "Refresh", value: ratio, reference: "pgbench -N", target: { atLeast: 0.5 } },
      ] satisfies Ratio[],
    };
  } finally {
    generator.child.disconnect();
    await keygate.stop();
    await scratch.drop();
  }
}

if (process.argv[2] === "client") await client();
