/**
 * Load from C generators that barely load the machine: Debian's `wrk` for HTTP/1.1 and
 * `h2load` (nghttp2-client) for h2c, closed loop with a fixed number in flight or, with
 * h2load's --rps, an open loop at a fixed rate. Installed with apt-get when missing.
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { quantile } from "./support.js";

const run = promisify(execFile);

export interface CRequest {
  url: string;
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /**
   * wrk only: one body per call, each sent once, in order (single-use values such as
   * authorization codes); once they run out, the last one is sent again (and fails).
   */
  bodies?: readonly string[];
  /**
   * wrk only: each connection waits this long before each call (wrk's `delay` hook), so that
   * `connections` of them send about connections × 1000 / delayMs calls a second: a fixed
   * rate well below the peak, where the latency is the call's own rather than the queue's.
   */
  delayMs?: number;
}

export interface CFigures {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  calls: number;
  /** Answers that were not 2xx (HTTP status; gRPC's own status is checked by a probe). */
  failed: number;
}

const has = (tool: string) => {
  try {
    execFileSync("which", [tool], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
};

/** wrk and h2load, installed with apt-get (as root) when missing; throws when that fails. */
export function ensureCGenerators(): void {
  const missing = [
    ["wrk", "wrk"],
    ["h2load", "nghttp2-client"],
  ].filter(([tool]) => !has(tool as string));
  if (missing.length === 0) return;
  const packages = missing.map(([, p]) => p as string);
  console.log(`installing ${packages.join(", ")} with apt-get`);
  try {
    execFileSync("apt-get", ["install", "-y", ...packages], { stdio: "ignore" });
  } catch {
    execFileSync("apt-get", ["update"], { stdio: "ignore" });
    execFileSync("apt-get", ["install", "-y", ...packages], { stdio: "ignore" });
  }
}

/** A gRPC length-prefixed message, as a request body for h2load. */
export function grpcFrame(message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

const luaString = (s: string) => JSON.stringify(s); // JSON's escapes are valid Lua for ASCII

/** HTTP/1.1, closed loop: wrk with one thread and `connections` keep-alive connections. */
export async function wrk(req: CRequest, ms: number, connections = 32): Promise<CFigures> {
  const dir = await mkdtemp(path.join(tmpdir(), "keygate-wrk-"));
  try {
    const script = path.join(dir, "request.lua");
    const body = req.body === undefined ? undefined : Buffer.from(req.body).toString("latin1");
    await writeFile(
      script,
      [
        `wrk.method = ${luaString(req.method ?? "GET")}`,
        ...(body === undefined ? [] : [`wrk.body = ${luaString(body)}`]),
        ...Object.entries(req.headers ?? {}).map(
          ([k, v]) => `wrk.headers[${luaString(k)}] = ${luaString(v)}`,
        ),
        ...(req.delayMs === undefined ? [] : [`delay = function() return ${req.delayMs} end`]),
        ...(req.bodies === undefined
          ? []
          : [
              `local bodies = {${req.bodies.map(luaString).join(",")}}`,
              "local next = 0",
              "request = function()",
              "  next = math.min(next + 1, #bodies)",
              "  return wrk.format(nil, nil, nil, bodies[next])",
              "end",
            ]),
      ].join("\n"),
    );
    const seconds = Math.max(1, Math.round(ms / 1000));
    const { stdout } = await run("wrk", [
      "-t1",
      `-c${connections}`,
      `-d${seconds}s`,
      "--latency",
      "-s",
      script,
      req.url,
    ]);
    const duration = (text: string | undefined) => {
      const m = /([\d.]+)(us|ms|s)/.exec(text ?? "");
      if (!m) return Number.NaN;
      const n = Number(m[1]);
      return m[2] === "us" ? n / 1000 : m[2] === "s" ? n * 1000 : n;
    };
    const calls = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0);
    return {
      perSecond: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? 0),
      p50Ms: duration(/\n\s+50%\s+(\S+)/.exec(stdout)?.[1]),
      p99Ms: duration(/\n\s+99%\s+(\S+)/.exec(stdout)?.[1]),
      calls,
      failed:
        Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0) +
        Number(
          /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/
            .exec(stdout)
            ?.slice(1)
            .reduce((a, b) => a + Number(b), 0) ?? 0,
        ),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * h2c (or HTTP/1.1 with `h1`): h2load with one thread. Closed loop: `clients` connections
 * with `inFlight` streams each. Open loop (`rate`): that many calls a second in all, spread
 * over the clients, whatever is still in flight (up to 1,000 streams a connection).
 */
export async function h2load(
  req: CRequest,
  ms: number,
  options: { clients?: number; inFlight?: number; rate?: number; h1?: boolean } = {},
): Promise<CFigures> {
  const dir = await mkdtemp(path.join(tmpdir(), "keygate-h2load-"));
  try {
    const clients = options.clients ?? 1;
    const log = path.join(dir, "requests.tsv");
    const args = [
      "-t1",
      `-c${clients}`,
      `-m${options.rate !== undefined && !options.h1 ? 1000 : (options.inFlight ?? 32)}`,
      `-D${Math.max(1, Math.round(ms / 1000))}`,
      "--warm-up-time=1",
      `--log-file=${log}`,
      ...(options.rate !== undefined
        ? [`--rps=${Math.max(1, Math.round(options.rate / clients))}`]
        : []),
      ...(options.h1 ? ["--h1"] : []),
      ...Object.entries(req.headers ?? {}).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
    ];
    if (req.body !== undefined) {
      const file = path.join(dir, "body");
      await writeFile(file, req.body);
      args.push("-d", file);
    }
    const { stdout } = await run("h2load", [...args, req.url], { maxBuffer: 1 << 24 });
    // Per request: start (µs since the epoch), HTTP status, µs until the end of the response.
    const rows = (await readFile(log, "utf8"))
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split("\t").map(Number))
      // Status 0: still in flight when the measurement stopped.
      .filter((r) => r[1] !== 0);
    const latencies = rows.map((r) => (r[2] ?? 0) / 1000).sort((a, b) => a - b);
    const failed = rows.filter((r) => !((r[1] ?? 0) >= 200 && (r[1] ?? 0) < 300)).length;
    const errored = Number(/(\d+) errored/.exec(stdout)?.[1] ?? 0);
    return {
      perSecond: Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(stdout)?.[1] ?? 0),
      p50Ms: quantile(latencies, 0.5),
      p99Ms: quantile(latencies, 0.99),
      calls: rows.length,
      failed: failed + errored,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
