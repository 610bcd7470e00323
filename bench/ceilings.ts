/**
 * Keygate's serving path against the bare-Node ceiling of each protocol, in one run, driven by
 * C load generators (wrk, h2load) that barely load the machine:
 *
 *   npm run bench -- ceilings [ms=5000] [rounds=1]
 *
 * Ceilings, in a child process: node:http answering the RFC 7662 answer as fixed bytes;
 * node:http2 answering a gRPC-shaped unary (and the Connect JSON / binary answer) as fixed
 * bytes; a bare @grpc/grpc-js server and a bare connect-node server with the generated
 * TokenIntrospectionService, each answering a fixed IntrospectResponse. Keygate, in this
 * process, on PGlite (or the PostgreSQL of DATABASE_URL), rate limits lifted, the same token
 * every call (cached), a replica with its token cache off (uncached), and two replicas that
 * differ only in KEYGATE_FAST_LANE (the lean unary lane on and off). Every figure is
 * printed as a ratio to its protocol's ceiling measured in the same run; on a shared machine
 * the absolute figures drift with other work, the ratios much less.
 */
import { fork } from "node:child_process";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary, toJsonString } from "@bufbuild/protobuf";
import { type ConnectRouter, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { CheckRequestSchema } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import {
  IntrospectBatchRequestSchema,
  IntrospectRequestSchema,
  IntrospectResponseSchema,
  TokenIntrospectionService,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import {
  type CFigures,
  type CRequest,
  ensureCGenerators,
  grpcFrame,
  h2load,
  wrk,
} from "./c-load.js";
import {
  benchDatabase,
  benchGateway,
  median,
  type Ratio,
  round,
  startBenchKeygate,
  startBenchPeer,
  verdict,
} from "./support.js";

const self = fileURLToPath(import.meta.url);
const introspectPath = "/keygate.v1.TokenIntrospectionService/Introspect";

const frame = grpcFrame;

interface Bodies {
  /** The RFC 7662 answer, the Connect JSON answer and the protobuf answer Keygate gave. */
  oauthJson: string;
  connectJson: string;
  proto: string; // base64
}

// ---- the bare servers (child process) ----

async function bare(bodies: Bodies): Promise<void> {
  const proto = Buffer.from(bodies.proto, "base64");
  const grpcBody = frame(proto);
  const drain = (s: NodeJS.ReadableStream, done: () => void) => {
    s.on("data", () => {});
    s.on("end", done);
  };

  const h1 = http.createServer((req, res) =>
    drain(req, () => {
      res.writeHead(200, {
        "content-type": "application/json",
        "cache-control": "no-store",
        "content-length": Buffer.byteLength(bodies.oauthJson),
      });
      res.end(bodies.oauthJson);
    }),
  );

  const h2 = http2.createServer();
  h2.on("stream", (stream, headers) => {
    const type = String(headers["content-type"] ?? "");
    // An open loop's last streams are reset by h2load when it stops.
    stream.on("error", () => {});
    drain(stream, () => {
      if (stream.closed) return;
      if (type.startsWith("application/grpc")) {
        stream.respond(
          { ":status": 200, "content-type": "application/grpc" },
          { waitForTrailers: true },
        );
        stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        stream.end(grpcBody);
      } else if (type === "application/proto") {
        stream.respond({ ":status": 200, "content-type": "application/proto" });
        stream.end(proto);
      } else {
        stream.respond({ ":status": 200, "content-type": "application/json" });
        stream.end(bodies.connectJson);
      }
    });
  });

  const answer = fromBinary(IntrospectResponseSchema, proto);

  // What a lean unary lane costs at the least: node:http2's stream API, the request decoded
  // and the answer encoded with @bufbuild/protobuf on every call, gRPC framing by hand.
  const lean = http2.createServer();
  lean.on("stream", (stream) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", () => {});
    stream.on("end", () => {
      if (stream.closed) return;
      const body = Buffer.concat(chunks);
      const req = fromBinary(IntrospectRequestSchema, body.subarray(5));
      const status = req.token === "" ? "3" : "0";
      stream.respond(
        { ":status": 200, "content-type": "application/grpc" },
        { waitForTrailers: true },
      );
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": status }));
      stream.end(frame(toBinary(IntrospectResponseSchema, answer)));
    });
  });
  const grpcServer = new grpc.Server();
  grpcServer.addService(
    {
      introspect: {
        path: introspectPath,
        requestStream: false,
        responseStream: false,
        requestDeserialize: (b: Buffer) => fromBinary(IntrospectRequestSchema, b),
        requestSerialize: (m: ReturnType<typeof create<typeof IntrospectRequestSchema>>) =>
          Buffer.from(toBinary(IntrospectRequestSchema, m)),
        responseSerialize: (m: typeof answer) => Buffer.from(toBinary(IntrospectResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(IntrospectResponseSchema, b),
      },
    },
    {
      introspect: (_call: unknown, callback: grpc.sendUnaryData<typeof answer>) =>
        callback(null, answer),
    },
  );
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, port) =>
      e ? reject(e) : resolve(port),
    ),
  );

  // The same grpc-js server, handed its connections by a net.Server of our own, as the
  // one-port listener would hand over the ones that speak gRPC.
  const injector = grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const injected = net.createServer((socket) => injector.injectConnection(socket));

  const connect = http2.createServer(
    connectNodeAdapter({
      routes: (router: ConnectRouter) =>
        router.service(TokenIntrospectionService, { introspect: () => answer }),
    }),
  );
  const listen = async (s: http.Server | http2.Http2Server | net.Server) => {
    await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
    return (s.address() as AddressInfo).port;
  };
  process.on("message", (m: string) => {
    if (m === "cpu") process.send?.({ cpu: process.cpuUsage() });
  });
  process.on("disconnect", () => process.exit(0));
  process.send?.({
    h1: await listen(h1),
    h2: await listen(h2),
    grpcJs: grpcPort,
    grpcJsInjected: await listen(injected),
    lean: await listen(lean),
    connect: await listen(connect),
  });
}

// ---- probes: one call with the same bytes, checked, before each measurement ----

/** One h2c call; the answer's body, after checking its HTTP status and gRPC status. */
async function h2call(req: CRequest): Promise<Buffer> {
  const url = new URL(req.url);
  const session = http2.connect(url.origin);
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      session.once("error", reject);
      const stream = session.request({
        ":method": req.method ?? "POST",
        ":path": url.pathname,
        ...req.headers,
      });
      const chunks: Buffer[] = [];
      let status = 0;
      let grpcStatus: string | undefined;
      let grpcMessage = "";
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        grpcStatus = h["grpc-status"] as string | undefined;
      });
      stream.on("trailers", (t) => {
        grpcStatus = t["grpc-status"] as string | undefined;
        grpcMessage = decodeURIComponent(String(t["grpc-message"] ?? ""));
      });
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("error", reject);
      stream.on("end", () => {
        const body = Buffer.concat(chunks);
        const grpcCall = req.headers?.["content-type"]?.startsWith("application/grpc");
        if (status !== 200 || (grpcCall && grpcStatus !== "0")) {
          reject(new Error(`${req.url}: HTTP ${status}, grpc-status ${grpcStatus} ${grpcMessage}`));
        } else resolve(grpcCall ? body.subarray(5) : body);
      });
      stream.end(req.body === undefined ? undefined : Buffer.from(req.body));
    });
  } finally {
    session.close();
  }
}

async function h1call(req: CRequest): Promise<Buffer> {
  const res = await fetch(req.url, {
    method: req.method ?? "GET",
    headers: req.headers,
    body: req.body === undefined ? undefined : Buffer.from(req.body),
  });
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`${req.url}: HTTP ${res.status}: ${body}`);
  return body;
}

// ---- the benchmark ----

const _password = "correct horse battery staple";

type Wire = "h1" | "h2";
interface Target {
  wire: Wire;
  request: CRequest;
  /** What the answer must say, checked on one call before the measurement. */
  check?: (body: Buffer) => boolean;
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 5_000);
  const rounds = Number(args[1] ?? 1);
  ensureCGenerators();

  // A batch of 100 access tokens (about 84 KB) fits the default request limit.
  const keygate = await startBenchKeygate();
  const uncachedPeer = await startBenchPeer(keygate, {
    KEYGATE_INTROSPECTION_CACHE_SIZE: "0",
    KEYGATE_DB_POOL_SIZE: "2",
  });
  // The same replica twice, with the lean unary lane on and off, side by side in one run.
  const lanePeers = {
    on: await startBenchPeer(keygate, { KEYGATE_FAST_LANE: "true", KEYGATE_DB_POOL_SIZE: "2" }),
    off: await startBenchPeer(keygate, { KEYGATE_FAST_LANE: "false", KEYGATE_DB_POOL_SIZE: "2" }),
  };
  let child: ReturnType<typeof fork> | undefined;
  try {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const _admin = createClient(AdminService, transport);
    const _auth = createClient(AuthService, transport);
    const _root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const { key, token } = await benchGateway(keygate);

    const bearer = { authorization: `Bearer ${key}` };
    const grpcHeaders = { "content-type": "application/grpc", te: "trailers", ...bearer };
    const introspectBinary = toBinary(
      IntrospectRequestSchema,
      create(IntrospectRequestSchema, { token }),
    );
    const active = (decode: (b: Buffer) => { active: boolean }) => (b: Buffer) => decode(b).active;
    const fromProto = (b: Buffer) => fromBinary(IntrospectResponseSchema, b);
    const fromJson = (b: Buffer) => JSON.parse(b.toString()) as { active: boolean };
    const requests = (base: string) => ({
      http: {
        wire: "h1" as const,
        request: {
          url: `${base}/oauth2/introspect`,
          method: "POST" as const,
          headers: { ...bearer, "content-type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ token }).toString(),
        },
        check: active(fromJson),
      },
      grpc: {
        wire: "h2" as const,
        request: {
          url: `${base}${introspectPath}`,
          headers: grpcHeaders,
          body: frame(introspectBinary),
        },
        check: active(fromProto),
      },
      connectJson: {
        wire: "h2" as const,
        request: {
          url: `${base}${introspectPath}`,
          headers: {
            "content-type": "application/json",
            "connect-protocol-version": "1",
            ...bearer,
          },
          body: JSON.stringify({ token }),
        },
        check: active(fromJson),
      },
      connectProto: {
        wire: "h2" as const,
        request: {
          url: `${base}${introspectPath}`,
          headers: {
            "content-type": "application/proto",
            "connect-protocol-version": "1",
            ...bearer,
          },
          body: introspectBinary,
        },
        check: active(fromProto),
      },
    });
    const cached = requests(keygate.url);
    const uncached = requests(uncachedPeer.url);
    const laneOn = requests(lanePeers.on.url);
    const laneOff = requests(lanePeers.off.url);

    // The answers Keygate gives are what the bare servers answer, byte for byte.
    const bodies: Bodies = {
      oauthJson: (await h1call(cached.http.request)).toString(),
      connectJson: (await h2call(cached.connectJson.request)).toString(),
      proto: (await h2call(cached.grpc.request)).toString("base64"),
    };
    if (JSON.parse(bodies.connectJson).active !== true) throw new Error("the token is not active");
    const bareChild = fork(self, ["bare", JSON.stringify(bodies)], {
      // The same V8 young generation as this process (npm run bench sets it, as the service's
      // own command lines do), so that tails compare.
      execArgv: [
        ...process.execArgv.filter((a) => a.startsWith("--max-semi-space-size")),
        "--import",
        "tsx",
      ],
    });
    child = bareChild;
    const ports = await new Promise<{
      h1: number;
      h2: number;
      grpcJs: number;
      grpcJsInjected: number;
      lean: number;
      connect: number;
    }>((resolve) => bareChild.once("message", resolve as (m: unknown) => void));
    const bareCpu = () =>
      new Promise<NodeJS.CpuUsage>((resolve) => {
        bareChild.once("message", (m: { cpu: NodeJS.CpuUsage }) => resolve(m.cpu));
        bareChild.send("cpu");
      });
    const at = (port: number) => `http://127.0.0.1:${port}`;
    const bareH2 = requests(at(ports.h2));

    const batchBody = frame(
      toBinary(
        IntrospectBatchRequestSchema,
        create(IntrospectBatchRequestSchema, {
          tokens: Array.from({ length: 100 }, () => ({ token })),
        }),
      ),
    );
    const envoyBody = frame(
      toBinary(
        CheckRequestSchema,
        create(CheckRequestSchema, {
          attributes: { request: { http: { headers: { authorization: `Bearer ${token}` } } } },
        }),
      ),
    );

    const targets: Record<string, Target & { ceiling?: string; bare?: boolean }> = {
      // the ceilings
      "bare node:http, fixed JSON": {
        ...requests(at(ports.h1)).http,
        check: undefined,
        bare: true,
      },
      "bare node:http2, gRPC-shaped unary": { ...bareH2.grpc, bare: true },
      "bare node:http2, Connect JSON unary": { ...bareH2.connectJson, bare: true },
      "bare node:http2, Connect binary unary": { ...bareH2.connectProto, bare: true },
      "bare @grpc/grpc-js, Introspect": {
        ...requests(at(ports.grpcJs)).grpc,
        ceiling: "bare node:http2, gRPC-shaped unary",
        bare: true,
      },
      "bare @grpc/grpc-js, Introspect, connections injected": {
        ...requests(at(ports.grpcJsInjected)).grpc,
        ceiling: "bare node:http2, gRPC-shaped unary",
        bare: true,
      },
      "bare node:http2 + @bufbuild/protobuf, Introspect, gRPC": {
        ...requests(at(ports.lean)).grpc,
        ceiling: "bare node:http2, gRPC-shaped unary",
        bare: true,
      },
      "bare connect-node, Introspect, gRPC": {
        ...requests(at(ports.connect)).grpc,
        ceiling: "bare node:http2, gRPC-shaped unary",
        bare: true,
      },
      "bare connect-node, Introspect, Connect JSON": {
        ...requests(at(ports.connect)).connectJson,
        ceiling: "bare node:http2, Connect JSON unary",
        bare: true,
      },
      // Keygate
      "Keygate GET /healthz": {
        wire: "h1",
        request: { url: `${keygate.url}/healthz` },
        ceiling: "bare node:http, fixed JSON",
      },
      "Keygate RFC 7662, cached": { ...cached.http, ceiling: "bare node:http, fixed JSON" },
      "Keygate RFC 7662, uncached": { ...uncached.http, ceiling: "bare node:http, fixed JSON" },
      "Keygate gRPC, cached": { ...cached.grpc, ceiling: "bare node:http2, gRPC-shaped unary" },
      "Keygate gRPC, uncached": { ...uncached.grpc, ceiling: "bare node:http2, gRPC-shaped unary" },
      "Keygate Connect JSON, cached": {
        ...cached.connectJson,
        ceiling: "bare node:http2, Connect JSON unary",
      },
      "Keygate Connect JSON, uncached": {
        ...uncached.connectJson,
        ceiling: "bare node:http2, Connect JSON unary",
      },
      "Keygate Connect binary, cached": {
        ...cached.connectProto,
        ceiling: "bare node:http2, Connect binary unary",
      },
      "Keygate Connect binary, uncached": {
        ...uncached.connectProto,
        ceiling: "bare node:http2, Connect binary unary",
      },
      ...Object.fromEntries(
        (
          [
            ["gRPC", "grpc", "bare node:http2, gRPC-shaped unary"],
            ["Connect JSON", "connectJson", "bare node:http2, Connect JSON unary"],
            ["Connect binary", "connectProto", "bare node:http2, Connect binary unary"],
          ] as const
        ).flatMap(([label, key, ceiling]) => [
          [`Keygate ${label}, cached, replica, lane on`, { ...laneOn[key], ceiling }],
          [`Keygate ${label}, cached, replica, lane off`, { ...laneOff[key], ceiling }],
        ]),
      ),
      "Keygate IntrospectBatch of 100, gRPC, cached": {
        wire: "h2",
        request: {
          url: `${keygate.url}/keygate.v1.TokenIntrospectionService/IntrospectBatch`,
          headers: grpcHeaders,
          body: batchBody,
        },
        ceiling: "bare node:http2, gRPC-shaped unary",
      },
      "Keygate Envoy Authorization/Check, gRPC, cached": {
        wire: "h2",
        request: {
          url: `${keygate.url}/envoy.service.auth.v3.Authorization/Check`,
          headers: grpcHeaders,
          body: envoyBody,
        },
        ceiling: "bare node:http2, gRPC-shaped unary",
      },
    };
    const names = Object.keys(targets);

    const measure = async (t: Target & { bare?: boolean }, rate?: number) => {
      const body = await (t.wire === "h1" ? h1call : h2call)(t.request);
      if (t.check && !t.check(body)) throw new Error(`${t.request.url}: not the expected answer`);
      const cpu0 = t.bare ? await bareCpu() : process.cpuUsage();
      const f: CFigures =
        rate !== undefined
          ? await h2load(t.request, ms, {
              rate,
              h1: t.wire === "h1",
              clients: t.wire === "h1" ? 4 : 1,
            })
          : t.wire === "h1"
            ? await wrk(t.request, ms)
            : await h2load(t.request, ms, { inFlight: 32 });
      const cpu1 = t.bare ? await bareCpu() : process.cpuUsage();
      if (f.failed > 0) throw new Error(`${t.request.url}: ${f.failed} calls failed`);
      const cpuUs = cpu1.user - cpu0.user + (cpu1.system - cpu0.system);
      // h2load warms up for a second before it counts; wrk does not.
      const seconds = ms / 1000 + (rate !== undefined || t.wire === "h2" ? 1 : 0);
      return { ...f, serverCpuUsPerCall: cpuUs / (f.perSecond * seconds) };
    };

    type M = Awaited<ReturnType<typeof measure>>;
    const peak: Record<string, M[]> = Object.fromEntries(names.map((n) => [n, []]));
    for (let r = 0; r < rounds; r++) {
      for (const n of names) {
        const t = targets[n];
        if (t) peak[n]?.push(await measure(t));
      }
    }
    const figure = (n: string) => {
      const ms_ = peak[n] ?? [];
      return {
        perSecond: round(median(ms_.map((m) => m.perSecond))),
        p50Ms: round(median(ms_.map((m) => m.p50Ms)), 2),
        p99Ms: round(median(ms_.map((m) => m.p99Ms)), 2),
        serverCpuUsPerCall: round(median(ms_.map((m) => m.serverCpuUsPerCall)), 1),
      };
    };
    const results: Record<
      string,
      ReturnType<typeof figure> & {
        ratio?: number;
        cpuRatio?: number;
        ceiling?: string;
        halfLoadP99Ms?: number;
        /** The ceiling's p99 at the same open-loop rate, measured right after. */
        halfLoadCeilingP99Ms?: number;
      }
    > = {};
    for (const n of names) {
      const t = targets[n];
      const f = figure(n);
      const ceiling = t?.ceiling ?? (n.startsWith("Keygate") ? undefined : n);
      const c = ceiling ? figure(ceiling) : undefined;
      results[n] = {
        ...f,
        ceiling,
        ratio: c ? round(f.perSecond / c.perSecond, 3) : undefined,
        // Server CPU per call of the ceiling over this one's: steadier than calls/s when other
        // work on the machine takes the cores between the two measurements.
        cpuRatio: c ? round(c.serverCpuUsPerCall / f.serverCpuUsPerCall, 3) : undefined,
      };
    }

    // Open loop at half of each cached protocol's peak, and a trivial call at 100/s.
    const halfLoad = [
      "Keygate RFC 7662, cached",
      "Keygate gRPC, cached",
      "Keygate Connect JSON, cached",
      "Keygate Connect binary, cached",
    ];
    // The bare ceiling at the same rate beside each: h2load's open loop on one connection and
    // the collector's pauses give bare Node a tail of its own, which this separates out.
    for (const n of halfLoad) {
      const t = targets[n];
      const x = results[n];
      const c = x?.ceiling ? targets[x.ceiling] : undefined;
      if (!t || !x) continue;
      x.halfLoadP99Ms = round((await measure(t, x.perSecond / 2)).p99Ms, 2);
      if (c) x.halfLoadCeilingP99Ms = round((await measure(c, x.perSecond / 2)).p99Ms, 2);
    }
    const health = {
      wire: "h2" as const,
      request: {
        url: `${keygate.url}/grpc.health.v1.Health/Check`,
        headers: { "content-type": "application/grpc", te: "trailers" },
        body: frame(new Uint8Array()),
      },
    };
    // Where a tail at 100 calls/s comes from: this process's event-loop stalls and GC pauses.
    const lag = monitorEventLoopDelay({ resolution: 1 });
    const gcs: number[] = [];
    const gcObserver = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) gcs.push(e.duration);
    });
    gcObserver.observe({ entryTypes: ["gc"] });
    lag.enable();
    const trivial = await measure(health, 100);
    lag.disable();
    gcObserver.disconnect();
    const trivialServer = {
      lagP99Ms: round(lag.percentile(99) / 1e6, 1),
      lagMaxMs: round(lag.max / 1e6, 1),
      gcMaxMs: round(Math.max(0, ...gcs), 1),
      gcOver5Ms: gcs.filter((d) => d > 5).length,
    };
    const trivialBare = await measure({ ...bareH2.grpc, check: undefined, bare: true }, 100);
    const introspect100 = await measure(cached.grpc, 100);

    const rows = Object.fromEntries(
      names.map((n) => {
        const x = results[n];
        return [
          n,
          {
            "calls/s": x?.perSecond,
            "x ceiling": x?.ratio,
            "x ceiling by CPU": x?.cpuRatio,
            "server CPU µs/call": x?.serverCpuUsPerCall,
            p50: x?.p50Ms,
            p99: x?.p99Ms,
            ...(x?.halfLoadP99Ms === undefined ? {} : { "half-load p99": x.halfLoadP99Ms }),
            ...(x?.halfLoadCeilingP99Ms === undefined
              ? {}
              : { "ceiling p99 at that rate": x.halfLoadCeilingP99Ms }),
          },
        ];
      }),
    );
    console.log(
      `\nceilings: Keygate against the bare-Node ceiling of each protocol in the same run ` +
        `(${benchDatabase()}, log level ${keygate.config.logLevel}), ${ms} ms per measurement ` +
        `x ${rounds} round(s); wrk -t1 -c32 for HTTP/1.1, h2load -t1 -c1 -m32 for h2c; ` +
        `half load: h2load --rps at half of the peak (open loop). The machine's other work ` +
        `moves the absolute figures; the ratios in one run are what count, and "x ceiling by ` +
        `CPU" (the ceiling's server CPU per call over this one's) drifts least.`,
    );
    console.table(rows);
    console.log(
      `  at 100 calls/s (open loop): Keygate gRPC Health/Check p50 ${round(trivial.p50Ms, 2)} ms, ` +
        `p99 ${round(trivial.p99Ms, 2)} ms (server event-loop lag p99 ${trivialServer.lagP99Ms} ms, ` +
        `max ${trivialServer.lagMaxMs} ms; longest GC ${trivialServer.gcMaxMs} ms, ` +
        `${trivialServer.gcOver5Ms} over 5 ms); bare node:http2 p99 ${round(trivialBare.p99Ms, 2)} ms; ` +
        `Keygate Introspect (gRPC, cached) p99 ${round(introspect100.p99Ms, 2)} ms`,
    );

    const goals: { name: string; figure: string; met: boolean; ratio?: Ratio }[] = [];
    const ratioGoal = (n: string, atLeast: number) => {
      const x = results[n];
      const ratio = x?.ratio ?? 0;
      goals.push({
        name: `${n} >= ${atLeast}x ${x?.ceiling}`,
        figure: `${ratio}x (${x?.perSecond}/s; by server CPU per call ${x?.cpuRatio}x)`,
        met: ratio >= atLeast,
        ratio: { label: n, value: ratio, reference: x?.ceiling ?? "", target: { atLeast } },
      });
    };
    const compared = (n: string) => n.includes(", replica, lane ");
    for (const n of names.filter(
      (n) => n.startsWith("Keygate") && n !== "Keygate GET /healthz" && !compared(n),
    )) {
      ratioGoal(n, n.endsWith("uncached") ? 0.3 : 0.5);
    }
    ratioGoal("Keygate GET /healthz", 0.7);
    for (const n of halfLoad) {
      const x = results[n];
      const p = x?.halfLoadP99Ms ?? Number.POSITIVE_INFINITY;
      goals.push({
        name: `${n} p99 < 5 ms at half of peak`,
        figure: `${p} ms (${x?.ceiling} at the same rate: ${x?.halfLoadCeilingP99Ms} ms)`,
        met: p < 5,
      });
    }
    goals.push({
      name: "trivial call (gRPC Health/Check) p99 < 2 ms at 100 calls/s",
      figure: `${round(trivial.p99Ms, 2)} ms`,
      met: trivial.p99Ms < 2,
    });
    for (const g of goals) console.log(`  ${verdict(g.met).padEnd(7)} ${g.name}: ${g.figure}`);
    console.log(
      "  (GetSession against better-auth, refresh rotations and logins: `peer`, `refresh`, `login`)",
    );

    return {
      ms,
      rounds,
      database: benchDatabase(),
      logLevel: keygate.config.logLevel,
      results,
      atHundredPerSecond: {
        keygateHealthCheck: {
          p50Ms: round(trivial.p50Ms, 2),
          p99Ms: round(trivial.p99Ms, 2),
          server: trivialServer,
        },
        bareHttp2: { p50Ms: round(trivialBare.p50Ms, 2), p99Ms: round(trivialBare.p99Ms, 2) },
        keygateIntrospectGrpc: {
          p50Ms: round(introspect100.p50Ms, 2),
          p99Ms: round(introspect100.p99Ms, 2),
        },
      },
      targets: Object.fromEntries(goals.map((g) => [g.name, g.met])),
      chart: goals.flatMap((g) => (g.ratio ? [g.ratio] : [])),
      responseSizes: {
        oauthJson: Buffer.byteLength(bodies.oauthJson),
        connectJson: Buffer.byteLength(bodies.connectJson),
        proto: Buffer.from(bodies.proto, "base64").length,
        protoJson: toJsonString(
          IntrospectResponseSchema,
          fromProto(Buffer.from(bodies.proto, "base64")),
        ).length,
      },
    };
  } finally {
    child?.disconnect();
    await lanePeers.on.close();
    await lanePeers.off.close();
    await uncachedPeer.close();
    await keygate.stop();
  }
}

if (process.argv[2] === "bare") await bare(JSON.parse(process.argv[3] ?? "{}") as Bodies);
