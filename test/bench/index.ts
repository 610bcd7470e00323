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
  const figures = await (await load()).run(args);
  await mkdir("bench-results", { recursive: true });
  const machine = {
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    node: process.version,
    date: new Date().toISOString(),
  };
  await writeFile(
    `bench-results/${n}.json`,
    `${JSON.stringify({ machine, ...figures }, null, 2)}\n`,
  );
}
