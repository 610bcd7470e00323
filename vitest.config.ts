import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Each file starts its own server and database; two at a time fit two cores.
    pool: "forks",
    // V8's code-space protection keys (PKU) once aborted a worker as it freed PGlite's
    // WebAssembly ("Check failed: jit_page_->allocations_.erase(addr) == 1" in
    // ThreadIsolation::UnregisterWasmAllocation, Node 24.21). Without them the JIT pages are
    // tracked the ordinary way.
    execArgv: ["--no-memory-protection-keys"],
    maxWorkers: 2,
    reporters: ["default"],
  },
});
