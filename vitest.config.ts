import { defineConfig } from "vitest/config";

// Four tiers, all run by `npm test`: `unit` (no database, no server: seconds), `database`
// (repositories, migrations, row-level security, the outbox on PGlite or PostgreSQL), `router`
// (the real routes and interceptors over createRouterTransport: a database, no listener) and
// `e2e` (real servers and stock clients). `npx vitest run --project unit` runs one tier.
const unit = [
  "test/access.test.ts",
  "test/amr.test.ts",
  "test/classify-error.test.ts",
  "test/config.test.ts",
  "test/layers.test.ts",
  "test/node-headers.test.ts",
  "test/fast-lane-context.test.ts",
  "test/password.test.ts",
  "test/role-spelling.test.ts",
  "test/security/coverage.test.ts",
];
const database = [
  "test/database-isolation.test.ts",
  "test/mail.test.ts",
  "test/migrate-data.test.ts",
  "test/migrate.test.ts",
  "test/outbox.test.ts",
  "test/row-level-security.test.ts",
  "test/signing-keys.test.ts",
];
const router = ["test/**/*.router.test.ts"];

export default defineConfig({
  test: {
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
    projects: [
      { extends: true, test: { name: "unit", include: unit } },
      { extends: true, test: { name: "database", include: database } },
      { extends: true, test: { name: "router", include: router } },
      {
        extends: true,
        test: {
          name: "e2e",
          include: ["test/**/*.test.ts"],
          exclude: [...unit, ...database, ...router],
        },
      },
    ],
  },
});
