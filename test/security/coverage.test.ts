import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";

// Every property in the security bar has at least one test named after its number:
// a describe or it title "SECURITY.md N: ..." (or "SECURITY.md N, M: ..." for several).

async function testFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(
    entries.map((e) => {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) return testFiles(p);
      return Promise.resolve(e.name.endsWith(".test.ts") ? [p] : []);
    }),
  );
  return nested.flat();
}

describe("SECURITY.md: every property has a test named after its number", () => {
  it("the project's SECURITY.md and the tests name properties 1 to 27 and every later one it lists", async () => {
    const doc = await readFile("SECURITY.md", "utf8");
    const titled = new Map<number, string[]>();
    for (const file of await testFiles("test")) {
      const text = await readFile(file, "utf8");
      for (const m of text.matchAll(/(?:describe|it)\(\s*[`"]SECURITY\.md ([\d, ]+):/g)) {
        for (const n of (m[1] as string).split(",").map((s) => Number(s.trim()))) {
          titled.set(n, [...(titled.get(n) ?? []), path.relative("test", file)]);
        }
      }
    }
    const missing: number[] = [];
    for (let n = 1; n <= 27; n++) {
      if (!titled.has(n)) missing.push(n);
      expect(doc, `property ${n} in SECURITY.md`).toMatch(new RegExp(`^\\| ${n} \\|`, "m"));
    }
    // Every later property the table claims has its test too.
    for (const m of doc.matchAll(/^\| (\d+) \|/gm)) {
      const n = Number(m[1]);
      if (n > 27 && !titled.has(n)) missing.push(n);
    }
    expect(missing).toEqual([]);
  });
});
