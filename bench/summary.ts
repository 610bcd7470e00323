/**
 * The benchmarks' summary, rebuilt after every run from the latest bench-results/<name>.json of
 * each benchmark: a printed table of every target and ratio, bench-results/summary.json, and
 * bench-results/summary.svg, a chart of each figure against its reference (log scale) with its
 * target marked.
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Ratio } from "./support.js";

interface Result {
  machine?: { cpus?: number; cpu?: string; node?: string; loadAverage?: number[]; date?: string };
  targets?: Record<string, boolean>;
  chart?: Ratio[];
  skipped?: string;
}

interface Row extends Ratio {
  bench: string;
  met: boolean | undefined;
}

const met = (r: Ratio): boolean | undefined => {
  if (!r.target) return undefined;
  if (r.target.atLeast !== undefined && r.value < r.target.atLeast) return false;
  if (r.target.atMost !== undefined && r.value > r.target.atMost) return false;
  return true;
};

const targetText = (r: Ratio) =>
  r.target?.atLeast !== undefined
    ? `≥ ${r.target.atLeast}`
    : r.target?.atMost !== undefined
      ? `≤ ${r.target.atMost}`
      : "";

export async function writeSummary(dir: string): Promise<void> {
  const names = (await readdir(dir).catch(() => []))
    .filter((f) => f.endsWith(".json") && f !== "summary.json")
    .map((f) => f.slice(0, -".json".length))
    .sort();
  const results: Record<string, Result> = {};
  for (const name of names) {
    results[name] = JSON.parse(await readFile(path.join(dir, `${name}.json`), "utf8")) as Result;
  }
  const rows: Row[] = Object.entries(results).flatMap(([bench, r]) =>
    (Array.isArray(r.chart) ? r.chart : []).map((ratio) => ({ bench, ...ratio, met: met(ratio) })),
  );
  const targets = Object.entries(results).flatMap(([bench, r]) =>
    Object.entries(r.targets ?? {}).map(([target, ok]) => ({ bench, target, met: ok })),
  );

  console.log(`\nsummary of the latest run of each benchmark (${dir}/summary.json, summary.svg)`);
  console.table(
    Object.fromEntries(
      Object.entries(results).map(([bench, r]) => [
        bench,
        {
          ran: r.machine?.date?.slice(0, 16).replace("T", " ") ?? "",
          "load average": r.machine?.loadAverage?.[0] ?? "",
          targets: r.skipped
            ? "skipped"
            : `${Object.values(r.targets ?? {}).filter(Boolean).length} of ${
                Object.keys(r.targets ?? {}).length
              } met`,
        },
      ]),
    ),
  );
  if (targets.length > 0) {
    console.table(
      targets.map((t) => ({
        bench: t.bench,
        target: t.target,
        verdict: t.met ? "met" : "NOT MET",
      })),
    );
  }
  await writeFile(
    path.join(dir, "summary.json"),
    `${JSON.stringify({ written: new Date().toISOString(), ratios: rows, targets }, null, 2)}\n`,
  );
  await writeFile(path.join(dir, "summary.svg"), chart(rows, results));
}

const xml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** A horizontal bar per figure on a log axis from 0.01x to 10x its reference, figures at the right. */
export function chart(rows: Row[], results: Record<string, Result>): string {
  const left = 350;
  const plot = 440;
  const top = 74;
  const rowHeight = 26;
  const width = left + plot + 170;
  const height = top + rows.length * rowHeight + 40;
  const [lo, hi] = [0.01, 10];
  const x = (v: number) =>
    left + (Math.log10(Math.min(hi, Math.max(lo, v)) / lo) / Math.log10(hi / lo)) * plot;
  const colour = (m: boolean | undefined) =>
    m === undefined ? "#607d8b" : m ? "#2e7d32" : "#c62828";
  const machines = Object.values(results)
    .map((r) => r.machine)
    .filter((m) => m !== undefined);
  const loads = machines.map((m) => m.loadAverage?.[0] ?? 0);
  const dates = machines.map((m) => m.date?.slice(0, 10) ?? "").sort();
  const first = machines[0];
  const subtitle = first
    ? `${first.cpus} × ${first.cpu ?? "CPU"}, Node ${first.node}, ${dates[0]}${
        dates.at(-1) !== dates[0] ? ` to ${dates.at(-1)}` : ""
      }, load average ${Math.min(...loads)}–${Math.max(...loads)}`
    : "";
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<title>Keygate benchmarks: each figure against its reference</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="600">Keygate benchmarks: each figure ` +
      `against its reference (log scale)</text>`,
    `<text x="16" y="44" fill="#555">${xml(subtitle)}</text>`,
    `<text x="16" y="62" fill="#555">green: target met · red: not met · grey: no target · ` +
      `black tick: the target</text>`,
  ];
  for (const v of [0.01, 0.1, 1, 10]) {
    out.push(
      `<line x1="${x(v)}" y1="${top - 6}" x2="${x(v)}" y2="${height - 30}" stroke="${
        v === 1 ? "#999" : "#e0e0e0"
      }"/>`,
      `<text x="${x(v)}" y="${height - 14}" text-anchor="middle" fill="#555">${v}×</text>`,
    );
  }
  rows.forEach((r, i) => {
    const y = top + i * rowHeight;
    out.push(
      `<text x="${left - 10}" y="${y + 16}" text-anchor="end">${xml(r.label)}` +
        `<tspan fill="#777"> vs ${xml(r.reference)}</tspan></text>`,
      `<rect x="${left}" y="${y + 5}" width="${Math.max(1, x(r.value) - left)}" height="15" ` +
        `fill="${colour(r.met)}" rx="2"/>`,
      `<text x="${left + plot + 14}" y="${y + 16}">${r.value}×${
        r.target ? `<tspan fill="#777"> (target ${xml(targetText(r))})</tspan>` : ""
      }</text>`,
    );
    const t = r.target?.atLeast ?? r.target?.atMost;
    if (t !== undefined) {
      out.push(
        `<line x1="${x(t)}" y1="${y + 2}" x2="${x(t)}" y2="${y + 23}" stroke="#000" ` +
          `stroke-width="2"/>`,
      );
    }
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
