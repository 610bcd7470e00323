import { execFile } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const root = path.resolve(import.meta.dirname, "../..");

/**
 * Builds the web app from the working tree into a temporary directory, so the tests serve what
 * web/ holds now rather than whatever web/dist was last built from. In a child process: the
 * bundler's thread pool would otherwise stay with the test's process.
 */
export async function buildWebApp(): Promise<string> {
  const outDir = await mkdtemp(path.join(tmpdir(), "keygate-web-"));
  await promisify(execFile)(
    path.join(root, "node_modules/.bin/vite"),
    [
      "build",
      "--config",
      "web/vite.config.ts",
      "--outDir",
      outDir,
      "--emptyOutDir",
      "--logLevel",
      "warn",
    ],
    { cwd: root },
  );
  return outDir;
}
