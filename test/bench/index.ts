/**
 * npm run bench [-- <name> [args...]]: runs the named benchmark (all when none is named),
 * prints its table and writes the figures to bench-results/<name>.json.
 */
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";

const benches: Record<
  string,
  () => Promise<{ run(args: string[]): Promise<Record<string, unknown>> }>
> = {
  "one-port": () => import("./one-port.js"),
  "jwt-alg": () => import("./jwt-alg.js"),
  verify: () => import("./verify.js"),
  introspect: () => import("./introspect.js"),
  login: () => import("./login.js"),
  refresh: () => import("./refresh.js"),
  signup: async () => ({ run: (a) => import("./flows.js").then((m) => m.runFlow("signup", a)) }),
  otp: async () => ({ run: (a) => import("./flows.js").then((m) => m.runFlow("otp", a)) }),
  "magic-link": async () => ({
    run: (a) => import("./flows.js").then((m) => m.runFlow("magic-link", a)),
  }),
  soak: () => import("./soak.js"),
};

const [name, ...args] = process.argv.slice(2);
const selected = name ? [name] : Object.keys(benches);
for (const n of selected) {
  const load = benches[n];
  if (!load) {
    console.error(`unknown benchmark ${n}; known: ${Object.keys(benches).join(", ")}`);
    process.exit(2);
  }
  let figures: Record<string, unknown>;
  try {
    figures = await (await load()).run(args);
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
