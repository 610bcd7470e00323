/**
 * Token introspection against raw signature verification: Introspect calls per second over
 * gRPC, over Connect (HTTP/2, binary) and through RFC 7662's form POST to /oauth2/introspect
 * (HTTP/1.1, as gateways send it), cached (the same token again and again) and uncached
 * (a second instance on the same database with KEYGATE_INTROSPECTION_CACHE_SIZE=0, so every
 * call checks the signature), next to jose's jwtVerify of the same token with the same public
 * key (from the JWKS) in this process; then p50/p99 under an open-loop load at half of each
 * measured peak. The servers run in this process (startKeygate); the calls come from a
 * load-generator child process, so client and server do not share an event loop.
 *
 *   npm run bench -- introspect [ms per measurement=3000] [rounds=3] [concurrency=32]
 *
 * Targets (the token-introspection issue): uncached >= 0.5x raw verify, cached >= 5x raw
 * verify, p99 < 2 ms at half of peak load.
 */
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { importJWK, type JWK, jwtVerify } from "jose";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import {
  benchDatabase,
  benchGateway,
  closedLoop,
  loadGenerator,
  median,
  openLoop,
  quantile,
  type Ratio,
  round,
  serveJobs,
  startBenchKeygate,
  startBenchPeer,
  verdict,
} from "./support.js";

const self = fileURLToPath(import.meta.url);

type Protocol = "grpc" | "connect" | "http";

interface Job {
  url: string;
  protocol: Protocol;
  key: string;
  token: string;
  ms: number;
  /** Closed loop with this many calls in flight, or an open loop at `rate` calls/s. */
  concurrency?: number;
  rate?: number;
}

export interface LoadFigures {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  calls: number;
  maxInFlight?: number;
  /** CPU time (user + system, all threads) of the process that made the calls, per call. */
  clientCpuUsPerCall?: number;
  /** CPU time of the serving process per call (warm-up included on both sides). */
  serverCpuUsPerCall?: number;
  /** The serving process's event-loop delay during the measurement. */
  serverLagP99Ms?: number;
  serverLagMaxMs?: number;
  /** Garbage collection in the serving process: time per call, and the longest pause. */
  serverGcUsPerCall?: number;
  serverGcMaxMs?: number;
}

const warmUpCalls = 200;

/** CPU microseconds (user + system, every thread) this process spent since `since`. */
const cpuSince = (since: NodeJS.CpuUsage) => {
  const d = process.cpuUsage(since);
  return d.user + d.system;
};

// ---- the load-generator child ----

async function client(): Promise<void> {
  const clients = new Map<string, (token: string) => Promise<boolean>>();
  /** An introspection of `token` by `protocol` at `url` with `key`, answering `active`. */
  const clientFor = (url: string, protocol: Protocol, key: string) => {
    const id = `${protocol} ${url}`;
    let c = clients.get(id);
    if (!c) {
      if (protocol === "http") {
        // RFC 7662 as a gateway sends it: a form POST over HTTP/1.1 (fetch keeps the
        // connections alive and reuses them).
        const endpoint = `${url}/oauth2/introspect`;
        c = async (token) => {
          const res = await fetch(endpoint, {
            method: "POST",
            headers: {
              authorization: `Bearer ${key}`,
              "content-type": "application/x-www-form-urlencoded",
            },
            body: new URLSearchParams({ token }).toString(),
          });
          if (res.status !== 200) throw new Error(`POST /oauth2/introspect answered ${res.status}`);
          return ((await res.json()) as { active: boolean }).active;
        };
      } else {
        // One transport per target: its HTTP/2 session is reused by every call.
        const transport =
          protocol === "grpc"
            ? createGrpcTransport({ baseUrl: url })
            : createConnectTransport({ baseUrl: url, httpVersion: "2" });
        const rpc = createClient(TokenIntrospectionService, transport);
        const options = { headers: { authorization: `Bearer ${key}` } };
        c = async (token) => (await rpc.introspect({ token }, options)).active;
      }
      clients.set(id, c);
    }
    return c;
  };
  const drive = async (job: Job): Promise<LoadFigures> => {
    const introspect = clientFor(job.url, job.protocol, job.key);
    let inactive = 0;
    const op = async () => {
      if (!(await introspect(job.token))) inactive++;
    };
    const cpu = process.cpuUsage();
    for (let i = 0; i < warmUpCalls; i++) await op(); // warm-up: session, JIT, caches
    const run =
      job.rate !== undefined
        ? await openLoop(op, job.rate, job.ms)
        : await closedLoop(op, job.ms, job.concurrency ?? 32);
    if (inactive > 0) throw new Error(`${inactive} answers were active=false`);
    return {
      perSecond: run.perSecond,
      p50Ms: quantile(run.latencies, 0.5),
      p99Ms: quantile(run.latencies, 0.99),
      calls: run.latencies.length,
      clientCpuUsPerCall: cpuSince(cpu) / (run.latencies.length + warmUpCalls),
      ...("maxInFlight" in run ? { maxInFlight: run.maxInFlight as number } : {}),
    };
  };
  serveJobs(drive);
}

// ---- the benchmark ----

const _password = "correct horse battery staple";

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 3_000);
  const rounds = Number(args[1] ?? 3);
  const concurrency = Number(args[2] ?? 32);

  const keygate = await startBenchKeygate();
  // The uncached side: a replica on the same database whose token cache is off, so every
  // call verifies the signature, as a never-seen token would.
  // It needs the database only for the admin key and the revocation feed: two connections keep
  // both instances within the embedded server's connection limit.
  const uncachedPeer = await startBenchPeer(keygate, {
    KEYGATE_INTROSPECTION_CACHE_SIZE: "0",
    KEYGATE_DB_POOL_SIZE: "2",
  });
  const generator = await loadGenerator(self);
  try {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const _admin = createClient(AdminService, transport);
    const _auth = createClient(AuthService, transport);
    const _root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const { key, token } = await benchGateway(keygate);

    // Raw verify: the same token, the public key from the JWKS, the checks SigningKeys makes.
    const jwks = (await (await fetch(`${keygate.url}/.well-known/jwks.json`)).json()) as {
      keys: (JWK & { kid: string })[];
    };
    const header = JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString());
    const jwk = jwks.keys.find((k) => k.kid === header.kid);
    if (!jwk) throw new Error("the token's key is not in the JWKS");
    const publicKey = await importJWK(jwk, header.alg);
    const verify = () =>
      jwtVerify(token, publicKey, {
        algorithms: [header.alg],
        issuer: keygate.config.issuer,
        audience: keygate.config.audience,
        typ: "at+jwt",
      });

    const targets = {
      "gRPC cached": { url: keygate.url, protocol: "grpc" as const },
      "gRPC uncached": { url: uncachedPeer.url, protocol: "grpc" as const },
      "Connect cached": { url: keygate.url, protocol: "connect" as const },
      "Connect uncached": { url: uncachedPeer.url, protocol: "connect" as const },
      "HTTP cached": { url: keygate.url, protocol: "http" as const },
      "HTTP uncached": { url: uncachedPeer.url, protocol: "http" as const },
    };
    type Name = keyof typeof targets;
    const names = Object.keys(targets) as Name[];
    const peak: Record<Name, LoadFigures[]> = {
      "gRPC cached": [],
      "gRPC uncached": [],
      "Connect cached": [],
      "Connect uncached": [],
      "HTTP cached": [],
      "HTTP uncached": [],
    };
    const half: Record<Name, LoadFigures[]> = structuredClone(peak);
    const raw: LoadFigures[] = [];
    for (let r = 0; r < rounds; r++) {
      // Rotate the order so drift in the machine's load hits every side alike.
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + r) % names.length] as Name;
        const base = { ...targets[name], key, token, ms };
        // Both servers live in this process and only one is called at a time, so this
        // process's CPU time over a measurement is what serving its calls cost.
        const measure = async (job: object) => {
          const cpu = process.cpuUsage();
          const lag = monitorEventLoopDelay({ resolution: 1 });
          lag.enable();
          const gcs: number[] = [];
          const gc = new PerformanceObserver((list) => {
            for (const e of list.getEntries()) gcs.push(e.duration);
          });
          gc.observe({ entryTypes: ["gc"] });
          const f = await generator.ask<LoadFigures>(job);
          gc.disconnect();
          lag.disable();
          return {
            ...f,
            serverGcUsPerCall: (gcs.reduce((a, b) => a + b, 0) * 1000) / (f.calls + warmUpCalls),
            serverGcMaxMs: Math.max(0, ...gcs),
            serverCpuUsPerCall: cpuSince(cpu) / (f.calls + warmUpCalls),
            serverLagP99Ms: lag.percentile(99) / 1e6,
            serverLagMaxMs: lag.max / 1e6,
          };
        };
        const p = await measure({ ...base, concurrency });
        peak[name].push(p);
        half[name].push(await measure({ ...base, rate: p.perSecond / 2 }));
      }
      const cpu = process.cpuUsage();
      for (let i = 0; i < 50; i++) await verify();
      const v = await closedLoop(verify, ms, concurrency);
      raw.push({
        perSecond: v.perSecond,
        p50Ms: quantile(v.latencies, 0.5),
        p99Ms: quantile(v.latencies, 0.99),
        calls: v.latencies.length,
        serverCpuUsPerCall: cpuSince(cpu) / (v.latencies.length + 50),
      });
    }

    const summary = (fs: LoadFigures[]) => ({
      perSecond: round(median(fs.map((f) => f.perSecond))),
      p50Ms: round(median(fs.map((f) => f.p50Ms)), 3),
      p99Ms: round(median(fs.map((f) => f.p99Ms)), 3),
      serverCpuUs: round(median(fs.map((f) => f.serverCpuUsPerCall ?? 0)), 1),
      clientCpuUs: round(median(fs.map((f) => f.clientCpuUsPerCall ?? 0)), 1),
      serverLagP99Ms: round(median(fs.map((f) => f.serverLagP99Ms ?? 0)), 1),
      serverLagMaxMs: round(median(fs.map((f) => f.serverLagMaxMs ?? 0)), 1),
      serverGcUs: round(median(fs.map((f) => f.serverGcUsPerCall ?? 0)), 1),
      serverGcMaxMs: round(median(fs.map((f) => f.serverGcMaxMs ?? 0)), 1),
    });
    const rawVerify = summary(raw);
    const results = Object.fromEntries(
      names.map((n) => {
        const p = summary(peak[n]);
        const h = summary(half[n]);
        return [
          n,
          {
            perSecond: p.perSecond,
            p50Ms: p.p50Ms,
            p99Ms: p.p99Ms,
            ratioToRawVerify: round(p.perSecond / rawVerify.perSecond, 3),
            serverCpuUsPerCall: p.serverCpuUs,
            serverGcUsPerCall: p.serverGcUs,
            serverGcMaxMs: p.serverGcMaxMs,
            clientCpuUsPerCall: p.clientCpuUs,
            // Calls per CPU-second of the server against verifies per CPU-second: what the
            // ratio would be with a core to spare for each side, whatever else the machine runs.
            cpuRatioToRawVerify: round(rawVerify.serverCpuUs / p.serverCpuUs, 3),
            halfLoadPerSecond: h.perSecond,
            halfLoadP50Ms: h.p50Ms,
            halfLoadP99Ms: h.p99Ms,
            halfLoadServerLagP99Ms: h.serverLagP99Ms,
            halfLoadServerLagMaxMs: h.serverLagMaxMs,
          },
        ];
      }),
    ) as Record<
      Name,
      ReturnType<typeof summary> & {
        ratioToRawVerify: number;
        serverCpuUsPerCall: number;
        serverGcUsPerCall: number;
        serverGcMaxMs: number;
        clientCpuUsPerCall: number;
        cpuRatioToRawVerify: number;
        halfLoadPerSecond: number;
        halfLoadP50Ms: number;
        halfLoadP99Ms: number;
        halfLoadServerLagP99Ms: number;
        halfLoadServerLagMaxMs: number;
      }
    >;

    console.log(
      `\nintrospect: Introspect from a separate process over loopback (${benchDatabase()}, ` +
        `log level ${keygate.config.logLevel}), ${ms} ms per measurement x ${rounds} rounds, ` +
        `medians; peak with ${concurrency} calls in flight (gRPC and Connect on one HTTP/2 ` +
        `connection, HTTP on keep-alive HTTP/1.1 connections), then an ` +
        `open loop at half of that peak; raw = jose jwtVerify of the same token in this ` +
        `process with ${concurrency} in flight`,
    );
    console.table({
      ...Object.fromEntries(
        names.map((n) => {
          const x = results[n];
          return [
            n,
            {
              "calls/s": x.perSecond,
              "x raw verify": x.ratioToRawVerify,
              "server CPU µs/call": x.serverCpuUsPerCall,
              "server GC µs/call": x.serverGcUsPerCall,
              "server GC max ms": x.serverGcMaxMs,
              "client CPU µs/call": x.clientCpuUsPerCall,
              p50: x.p50Ms,
              p99: x.p99Ms,
              "half-load calls/s": x.halfLoadPerSecond,
              "half-load p50": x.halfLoadP50Ms,
              "half-load p99": x.halfLoadP99Ms,
              "half-load server lag p99": x.halfLoadServerLagP99Ms,
              "half-load server lag max": x.halfLoadServerLagMaxMs,
            },
          ];
        }),
      ),
      "raw jose jwtVerify": {
        "calls/s": rawVerify.perSecond,
        "x raw verify": 1,
        "server CPU µs/call": rawVerify.serverCpuUs,
        p50: rawVerify.p50Ms,
        p99: rawVerify.p99Ms,
      },
    });
    const checks: Record<string, { figure: string; met: boolean }> = {};
    for (const n of names) {
      const x = results[n];
      checks[`${n} >= ${n.endsWith("uncached") ? "0.5" : "5"}x raw verify`] = {
        figure: `${x.ratioToRawVerify}x`,
        met: x.ratioToRawVerify >= (n.endsWith("uncached") ? 0.5 : 5),
      };
      checks[`${n} p99 < 2 ms at half of peak`] = {
        figure: `${x.halfLoadP99Ms} ms`,
        met: x.halfLoadP99Ms < 2,
      };
    }
    for (const [target, c] of Object.entries(checks)) {
      console.log(`  ${verdict(c.met).padEnd(7)} ${target}: ${c.figure}`);
    }
    return {
      ms,
      rounds,
      concurrency,
      database: benchDatabase(),
      logLevel: keygate.config.logLevel,
      rawVerify,
      results,
      targets: Object.fromEntries(Object.entries(checks).map(([t, c]) => [t, c.met])),
      chart: names.map(
        (n): Ratio => ({
          label: `Introspect, ${n}`,
          value: results[n].ratioToRawVerify,
          reference: "jose jwtVerify",
          target: { atLeast: n.endsWith("uncached") ? 0.5 : 5 },
        }),
      ),
    };
  } finally {
    generator.child.disconnect();
    await uncachedPeer.close();
    await keygate.stop();
  }
}

if (process.argv[2] === "client") await client();
