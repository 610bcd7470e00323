#!/usr/bin/env node
// Builds one publishable package under packages/ (client or verify) from the sources in src/
// and gen/: tsc emits the entry's files and the generated code they import into the
// package's dist/, and the repository's LICENSE is copied beside it. `npm pack` in the
// package's folder runs this first (prepack); `npm run build:packages` runs it for all.
import { execFileSync } from "node:child_process";
import { copyFileSync, rmSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const names = process.argv.slice(2);
if (names.length === 0 || names.some((n) => !["client", "verify"].includes(n))) {
  console.error("usage: build-package.mjs client|verify ...");
  process.exit(2);
}
for (const name of names) {
  const dir = path.join(root, "packages", name);
  rmSync(path.join(dir, "dist"), { recursive: true, force: true });
  execFileSync(path.join(root, "node_modules/.bin/tsc"), ["-p", path.join(dir, "tsconfig.json")], {
    stdio: "inherit",
  });
  copyFileSync(path.join(root, "LICENSE"), path.join(dir, "LICENSE"));
}
