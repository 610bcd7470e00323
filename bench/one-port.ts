/**
 * What serving every protocol on one port costs the gRPC path: the same Connect handler behind
 * Keygate's sniffing listener (h2c handed over as a replaying Duplex) and behind a bare
 * http2.createServer, driven in turn by a stock @grpc/grpc-js client in another process.
 *
 *   npm run bench -- one-port [calls=20000] [concurrency=32] [rounds=3]
 */
import { fork } from "node:child_process";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { createListener } from "../src/http/listener.js";
import type { Ratio } from "./support.js";

const self = fileURLToPath(import.meta.url);

async function server(): Promise<void> {
  const handler = connectNodeAdapter({
    routes: (router: ConnectRouter) =>
      router.service(Health, {
        check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }),
        async *watch() {},
      }),
  });
  const onePort = createListener(handler, {});
  const sniffed = await onePort.listen(0, "127.0.0.1");
  const bare = http2.createServer(handler);
  await new Promise<void>((resolve) => bare.listen(0, "127.0.0.1", resolve));
  process.send?.({ onePort: sniffed.port, bare: (bare.address() as AddressInfo).port });
}

interface Figures {
  callsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

async function drive(port: number, calls: number, concurrency: number): Promise<Figures> {
  const definition = protoLoader.loadSync("grpc/health/v1/health.proto", {
    includeDirs: [path.resolve(path.dirname(self), "../proto")],
  });
  // biome-ignore lint/suspicious/noExplicitAny: proto-loader builds the client classes at run time.
  const loaded = grpc.loadPackageDefinition(definition) as any;
  const client = new loaded.grpc.health.v1.Health(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  );
  const one = () =>
    new Promise<number>((resolve, reject) => {
      const t = performance.now();
      client.Check({}, (err: Error | null) => (err ? reject(err) : resolve(performance.now() - t)));
    });
  for (let i = 0; i < 500; i++) await one(); // warm-up
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < calls) {
        next++;
        latencies.push(await one());
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  client.close();
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return { callsPerSecond: calls / seconds, p50Ms: at(0.5), p99Ms: at(0.99) };
}

async function client(): Promise<void> {
  process.on("message", async (msg: { port: number; calls: number; concurrency: number }) => {
    process.send?.(await drive(msg.port, msg.calls, msg.concurrency));
  });
  process.send?.("ready");
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const calls = Number(args[0] ?? 20_000);
  const concurrency = Number(args[1] ?? 32);
  const rounds = Number(args[2] ?? 3);
  const serverChild = fork(self, ["server"], { execArgv: ["--import", "tsx"] });
  const ports = await new Promise<{ onePort: number; bare: number }>((resolve) =>
    serverChild.once("message", resolve as never),
  );
  const clientChild = fork(self, ["client"], { execArgv: ["--import", "tsx"] });
  await new Promise((resolve) => clientChild.once("message", resolve));
  const ask = (port: number) =>
    new Promise<Figures>((resolve) => {
      clientChild.once("message", resolve as never);
      clientChild.send({ port, calls, concurrency });
    });
  const results: { onePort: Figures[]; bare: Figures[] } = { onePort: [], bare: [] };
  // Alternate so that drift in the machine's load hits both sides alike.
  for (let r = 0; r < rounds; r++) {
    results.bare.push(await ask(ports.bare));
    results.onePort.push(await ask(ports.onePort));
  }
  serverChild.kill();
  clientChild.kill();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const summary = (fs: Figures[]) => ({
    callsPerSecond: Math.round(median(fs.map((f) => f.callsPerSecond))),
    p50Ms: Number(median(fs.map((f) => f.p50Ms)).toFixed(3)),
    p99Ms: Number(median(fs.map((f) => f.p99Ms)).toFixed(3)),
  });
  const bare = summary(results.bare);
  const onePort = summary(results.onePort);
  console.log(
    `\none-port: gRPC unary Health/Check, ${calls} calls x ${rounds} rounds, concurrency ${concurrency}`,
  );
  console.table({ "bare http2 server": bare, "one-port listener": onePort });
  console.log(
    `throughput ratio one-port / bare: ${(onePort.callsPerSecond / bare.callsPerSecond).toFixed(3)}`,
  );
  return {
    calls,
    concurrency,
    rounds,
    bare,
    onePort,
    ratio: onePort.callsPerSecond / bare.callsPerSecond,
    chart: [
      {
        label: "gRPC, one-port listener",
        value: Number((onePort.callsPerSecond / bare.callsPerSecond).toFixed(3)),
        reference: "bare http2 server",
      },
    ] satisfies Ratio[],
  };
}

if (process.argv[2] === "server") await server();
else if (process.argv[2] === "client") await client();
