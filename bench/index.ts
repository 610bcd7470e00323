/**
 * npm run bench [-- <name> [args...]]: runs the named benchmark (all when none is named, each
 * in a fresh process),
 * prints its table and writes the figures to bench-results/<name>.json; then prints the summary
 * of the latest figures of every benchmark and writes bench-results/summary.{json,svg}.
 */

import { fork } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { writeSummary } from "./summary.js";

const benches: Record<
  string,
  () => Promise<{ run(args: string[]): Promise<Record<string, unknown>> }>
> = {
  "one-port": () => import("./one-port.js"),
  ceilings: () => import("./ceilings.js"),
  "jwt-alg": () => import("./jwt-alg.js"),
  verify: () => import("./verify.js"),
  introspect: () => import("./introspect.js"),
  login: () => import("./login.js"),
  memory: () => import("./memory.js"),
  refresh: () => import("./refresh.js"),
  passkey: () => import("./passkey.js"),
  oauth: () => import("./oauth.js"),
  "grant-revocation": () => import("./grant-revocation.js"),
  signup: async () => ({ run: (a) => import("./flows.js").then((m) => m.runFlow("signup", a)) }),
  otp: async () => ({ run: (a) => import("./flows.js").then((m) => m.runFlow("otp", a)) }),
  "magic-link": async () => ({
    run: (a) => import("./flows.js").then((m) => m.runFlow("magic-link", a)),
  }),
  peer: () => import("./peer.js"),
  soak: () => import("./soak.js"),
};

const [name, ...args] = process.argv.slice(2);
if (name === undefined) {
  // Each benchmark in a process of its own, one after another: none inherits another's heap,
  // threads or connections (the memory benchmark's resident set would otherwise start with
  // every earlier benchmark's).
  for (const n of Object.keys(benches)) {
    const code = await new Promise<number | null>((resolve) =>
      fork(fileURLToPath(import.meta.url), [n, "--no-summary"], {
        execArgv: process.execArgv,
      }).once("exit", resolve),
    );
    if (code !== 0) process.exitCode = 1;
  }
  await writeSummary("bench-results");
  process.exit();
}
const summary = !args.includes("--no-summary");
const selected = [name];
for (const n of selected) {
  const load = benches[n];
  if (!load) {
    console.error(`unknown benchmark ${n}; known: ${Object.keys(benches).join(", ")}`);
    process.exit(2);
  }
  let figures: Record<string, unknown>;
  try {
    figures = await (await load()).run(args.filter((a) => a !== "--no-summary"));
  } catch (error) {
    // One failing benchmark does not stop the others; the run still fails at the end.
    console.error(`\n${n}: FAILED`, error);
    process.exitCode = 1;
    continue;
  }
  await mkdir("bench-results", { recursive: true });
  const machine = {
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    node: process.version,
    // Other work on the machine; the figures of a busy machine are not comparable to a quiet one's.
    loadAverage: os.loadavg().map((x) => Number(x.toFixed(2))),
    date: new Date().toISOString(),
  };
  await writeFile(
    `bench-results/${n}.json`,
    `${JSON.stringify({ machine, ...figures }, null, 2)}\n`,
  );
}

// The summary table and chart cover the latest run of every benchmark, this one's included.
if (summary) await writeSummary("bench-results");
// A benchmark run by `npm run bench` (all) lets go of its parent, so that it can exit.
if (process.connected) process.disconnect();
