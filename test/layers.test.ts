import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

/**
 * The floors of src/, lowest first. A module imports from its own floor or lower ones, never
 * from a higher one, so that the arrows of the dependency graph all point down: the domain
 * knows nothing of Connect, the data layer nothing of flows, crypto nothing of the database.
 * The published libraries (verify/, client/) stand beside the floors: they import only the
 * base and themselves, and the service does not import them. The edge (handlers, interceptors,
 * HTTP endpoints) reaches tables only through the domain's names (domain/model.ts).
 */
const floors: readonly (readonly [string, (file: string) => boolean])[] = [
  [
    "base",
    (f) =>
      f.startsWith("gen/") ||
      [
        "src/errors.ts",
        "src/revocation-set.ts",
        "src/resource-identifiers.ts",
        "src/clock.ts",
        "src/config.ts",
        "src/config-env.ts",
        "src/workspace-settings.ts",
        "src/log.ts",
      ].includes(f),
  ],
  ["crypto", (f) => f.startsWith("src/crypto/")],
  ["data", (f) => f.startsWith("src/db/") || f.startsWith("src/repositories/")],
  ["domain", (f) => f.startsWith("src/domain/") || f.startsWith("src/mail/")],
  [
    "edge",
    (f) =>
      /^src\/(handlers|interceptors|http)\//.test(f) ||
      [
        "src/context-keys.ts",
        "src/call-log.ts",
        "src/metrics.ts",
        "src/readiness.ts",
        "src/tracing.ts",
      ].includes(f),
  ],
  ["composition", (f) => f.startsWith("src/")],
];
const libraries = ["src/verify/", "src/client/"];

const root = path.resolve(import.meta.dirname, "..");
const edge = floors.findIndex(([name]) => name === "edge");
const library = (f: string) => libraries.find((l) => f.startsWith(l));
const floorOf = (f: string) => floors.findIndex(([, has]) => has(f));

function sources(dir: string): string[] {
  return readdirSync(path.join(root, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.(ts|mjs)$/.test(e.name))
    .map((e) => path.relative(root, path.join(e.parentPath, e.name)));
}

/** Every relative import and re-export of a module, as repository paths of .ts files. */
function importsOf(file: string): string[] {
  const text = readFileSync(path.join(root, file), "utf8");
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^;]*?from\s+"(\.{1,2}\/[^"]+)"/g)].map(
    (m) =>
      path
        .relative(root, path.resolve(path.dirname(path.join(root, file)), m[1] as string))
        .replace(/\.js$/, ".ts"),
  );
}

describe("the floors of src/", () => {
  const files = sources("src");

  it("knows every module's floor", () => {
    expect(files.length).toBeGreaterThan(100);
    for (const f of files)
      expect({ f, floor: library(f) ?? floorOf(f) }).not.toEqual({ f, floor: -1 });
  });

  it("has no import from a lower floor to a higher one", () => {
    const upward: string[] = [];
    for (const f of files) {
      const own = library(f);
      for (const target of importsOf(f)) {
        if (target.startsWith("test/")) upward.push(`${f} -> ${target} (tests)`);
        const lib = library(target);
        if (own) {
          if (lib !== own && floorOf(target) !== 0) upward.push(`${f} -> ${target} (library)`);
        } else if (lib) {
          upward.push(`${f} -> ${target} (the service imports a library)`);
        } else if (floorOf(f) >= edge && target.startsWith("src/repositories/")) {
          // Above the domain, tables are known only through the domain (domain/model.ts).
          if (floorOf(f) === edge) upward.push(`${f} -> ${target} (edge past the domain)`);
        } else if (floorOf(target) > floorOf(f)) {
          upward.push(
            `${f} (${floors[floorOf(f)]?.[0]}) -> ${target} (${floors[floorOf(target)]?.[0]})`,
          );
        }
      }
    }
    expect(upward).toEqual([]);
  });

  it("catches an upward import (the check itself works)", () => {
    expect(floorOf("src/crypto/password.ts")).toBeLessThan(floorOf("src/domain/login.ts"));
    expect(
      importsOf("src/domain/login.ts").some(
        (t) => floorOf(t) === floorOf("src/repositories/users.ts"),
      ),
    ).toBe(true);
  });
});
