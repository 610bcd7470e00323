/**
 * Soak: mixed load on loopback against one Keygate for a while, counting every outcome and
 * sampling memory. The only failures expected are the deliberate refusals (a wrong password
 * answers UNAUTHENTICATED); anything else counts as an error.
 *
 *   npm run bench -- soak [seconds=600] [concurrency=16]
 *
 * The service runs in this process (startBenchKeygate: embedded PGlite, or a fresh database on
 * DATABASE_URL's server; rate limits lifted, lockout at 1,000 failures), so memory is this
 * process's heap after a full garbage collection, the load generator's included — growth
 * shows as a rising heap from one window to the next.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";
import { benchDatabase, memorySample, type Ratio, startBenchKeygate } from "./support.js";

const password = "correct horse battery staple";
const percentile = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const seconds = Number(args[0] ?? 600);
  const concurrency = Number(args[1] ?? 16);
  const keygate = await startBenchKeygate();
  try {
    const rootKey = keygate.rootKey;
    const workspaceId = keygate.workspaceId;
    const root = { headers: { authorization: `Bearer ${rootKey}` } };
    const connect = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const grpc = createGrpcTransport({ baseUrl: keygate.url });
    const admin = createClient(AdminService, connect);
    const auth = createClient(AuthService, connect);
    const introspection = createClient(TokenIntrospectionService, grpc);
    const health = createClient(Health, grpc);
    const { secret } = await admin.createAdminKey(
      { name: "soak", role: AdminKeyRole.READ_ONLY, introspect: true },
      root,
    );
    const users = Array.from(
      { length: concurrency },
      (_, i) => `soak-${i}-${Date.now()}@example.test`,
    );
    for (const email of users) {
      await admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
    }

    type Op = (state: { email: string; access: string; refresh: string }) => Promise<unknown>;
    const ops: Record<string, { weight: number; op: Op; refusal?: Code }> = {
      login: {
        weight: 1,
        op: async (s) => {
          const res = await auth.login({ email: s.email, password, workspaceId });
          if (res.result.case === "tokens") {
            s.access = res.result.value.accessToken;
            s.refresh = res.result.value.refreshToken;
          }
        },
      },
      "login (wrong password)": {
        weight: 1,
        refusal: Code.Unauthenticated,
        op: (s) => auth.login({ email: s.email, password: "wrong password here", workspaceId }),
      },
      refresh: {
        weight: 3,
        op: async (s) => {
          const res = await auth.refresh({ refreshToken: s.refresh });
          s.access = res.tokens?.accessToken ?? s.access;
          s.refresh = res.tokens?.refreshToken ?? s.refresh;
        },
      },
      introspect: {
        weight: 10,
        op: (s) =>
          introspection.introspect(
            { token: s.access },
            { headers: { authorization: `Bearer ${secret}` } },
          ),
      },
      getSession: {
        weight: 5,
        op: (s) => auth.getSession({}, { headers: { authorization: `Bearer ${s.access}` } }),
      },
      "requestPasswordReset (unknown)": {
        weight: 1,
        op: () =>
          auth.requestPasswordReset({ email: `nobody-${Math.random()}@example.test`, workspaceId }),
      },
      listUsers: { weight: 2, op: () => admin.listUsers({ workspaceId, pageSize: 20 }, root) },
      "health check": { weight: 5, op: () => health.check({}) },
    };
    const names = Object.keys(ops);
    const table = names.flatMap((n) => Array.from({ length: ops[n]?.weight ?? 0 }, () => n));
    const counts: Record<string, Record<string, number>> = {};
    const latencies: number[] = [];
    const memory: { second: number; heapMB: number; rssMB: number }[] = [];
    const started = performance.now();
    const end = started + seconds * 1000;
    const sampler = setInterval(() => {
      const m = memorySample();
      memory.push({
        second: Math.round((performance.now() - started) / 1000),
        heapMB: m.heapMB,
        rssMB: m.rssMB,
      });
    }, 10_000);
    await Promise.all(
      users.map(async (email) => {
        const state = { email, access: "", refresh: "" };
        // Counted like every other call: the first iteration of each worker is a login.
        let first = true;
        while (performance.now() < end) {
          const name = first
            ? "login"
            : (table[Math.floor(Math.random() * table.length)] as string);
          first = false;
          const entry = ops[name] as (typeof ops)[string];
          const t0 = performance.now();
          const outcome = await entry.op(state).then(
            () => "ok",
            (e) => {
              const code = ConnectError.from(e).code;
              return code === entry.refusal ? "refused (deliberate)" : `error ${Code[code]}`;
            },
          );
          latencies.push(performance.now() - t0);
          const c = counts[name] ?? {};
          counts[name] = c;
          c[outcome] = (c[outcome] ?? 0) + 1;
        }
      }),
    );
    clearInterval(sampler);
    const elapsed = (performance.now() - started) / 1000;
    const errors = Object.values(counts)
      .flatMap((c) => Object.entries(c))
      .filter(([k]) => k.startsWith("error"))
      .reduce((sum, [, v]) => sum + v, 0);
    const window = Math.max(1, Math.floor(memory.length / 4));
    const avg = (xs: typeof memory) =>
      xs.reduce((s, x) => s + x.heapMB, 0) / Math.max(1, xs.length);
    const heapFirstQuarter = avg(memory.slice(0, window));
    const heapLastQuarter = avg(memory.slice(-window));
    const figures = {
      seconds: Math.round(elapsed),
      concurrency,
      database: benchDatabase(),
      gcExposed: memorySample.gcExposed,
      calls: latencies.length,
      callsPerSecond: Math.round(latencies.length / elapsed),
      p50Ms: Math.round(percentile(latencies, 50) * 10) / 10,
      p99Ms: Math.round(percentile(latencies, 99) * 10) / 10,
      errors,
      outcomes: counts,
      heapFirstQuarterMB: Math.round(heapFirstQuarter * 10) / 10,
      heapLastQuarterMB: Math.round(heapLastQuarter * 10) / 10,
      heapGrowthRatio: Math.round((heapLastQuarter / heapFirstQuarter) * 100) / 100,
      memory,
      targets: {
        "no errors but the deliberate refusals": errors === 0,
        "heap growth <= 10% (first to last quarter)": heapLastQuarter / heapFirstQuarter <= 1.1,
      },
      chart: [
        {
          label: "Soak: heap in the last quarter",
          value: Math.round((heapLastQuarter / heapFirstQuarter) * 1000) / 1000,
          reference: "first quarter",
          target: { atMost: 1.1 },
        },
      ] satisfies Ratio[],
    };
    console.table(
      Object.fromEntries(names.map((n) => [n, counts[n] ?? {}])) as Record<
        string,
        Record<string, number>
      >,
    );
    console.log(
      `${figures.calls} calls in ${figures.seconds} s (${figures.callsPerSecond}/s), p50 ${figures.p50Ms} ms, p99 ${figures.p99Ms} ms, errors ${errors}; heap ${figures.heapFirstQuarterMB} MB -> ${figures.heapLastQuarterMB} MB (x${figures.heapGrowthRatio}), gc exposed: ${figures.gcExposed}`,
    );
    return figures;
  } finally {
    await keygate.stop();
  }
}
