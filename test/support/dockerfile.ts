import { spawn } from "node:child_process";
import { chmod, cp, mkdir, readdir, stat } from "node:fs/promises";
import path from "node:path";

/** One instruction of a Dockerfile: its keyword, its raw arguments, and the exec form when given. */
export interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}

/**
 * The instructions of a Dockerfile: comments and blank lines dropped, lines continued with a
 * trailing backslash joined (comment lines inside a continuation dropped, as Docker does).
 */
export function parseDockerfile(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  const lines = text.split("\n");
  let pending: { parts: string[]; line: number } | undefined;
  for (const [index, raw] of lines.entries()) {
    const line = raw.trimEnd();
    if (line.trim().startsWith("#") || (pending === undefined && line.trim() === "")) continue;
    const continued = line.endsWith("\\");
    const part = continued ? line.slice(0, -1) : line;
    pending ??= { parts: [], line: index + 1 };
    pending.parts.push(part);
    if (continued) continue;
    // Docker drops the backslash and the line break: the parts run on as one line.
    const whole = pending.parts.join("").trim();
    const match = /^(\S+)\s*([\s\S]*)$/.exec(whole);
    if (!match) throw new Error(`line ${pending.line}: cannot read "${whole}"`);
    instructions.push({
      keyword: (match[1] as string).toUpperCase(),
      args: (match[2] as string).trim(),
      line: pending.line,
    });
    pending = undefined;
  }
  if (pending) throw new Error(`line ${pending.line}: continued past the end of the file`);
  return instructions;
}

/** `--name=value` options in front of an instruction's arguments. */
export function splitFlags(args: string): { flags: Record<string, string>; rest: string } {
  const flags: Record<string, string> = {};
  let rest = args;
  for (;;) {
    const match = /^--([a-z-]+)=(\S+)\s*/.exec(rest);
    if (!match) return { flags, rest };
    flags[match[1] as string] = match[2] as string;
    rest = rest.slice(match[0].length);
  }
}

/** The exec form (a JSON array) or, for the shell form, undefined. */
export function execForm(args: string): string[] | undefined {
  if (!args.startsWith("[")) return undefined;
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === "string"))
    throw new Error(`not a JSON array of strings: ${args}`);
  return parsed;
}

/** `ENV a=1 b="two words"` (and the old `ENV a 1`) as pairs. */
export function parseEnv(args: string): [string, string][] {
  const text = args.replace(/\n/g, " ").trim();
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(text)) {
    const [name, ...value] = text.split(/\s+/);
    return [[name as string, value.join(" ")]];
  }
  const pairs: [string, string][] = [];
  const pattern = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)\s*/gy;
  let match: RegExpExecArray | null;
  let consumed = 0;
  // biome-ignore lint/suspicious/noAssignInExpressions: the sticky regex walks the text
  while ((match = pattern.exec(text)) !== null) {
    let value = match[2] as string;
    if (value.startsWith('"')) value = JSON.parse(value) as string;
    else if (value.startsWith("'")) value = value.slice(1, -1);
    pairs.push([match[1] as string, value]);
    consumed = pattern.lastIndex;
    if (consumed >= text.length) break;
  }
  if (consumed < text.length) throw new Error(`cannot read ENV ${args}`);
  return pairs;
}

/**
 * A .dockerignore: which paths of the build context are left out. Supports what Docker
 * documents short of exceptions (`!`), which this replay refuses rather than misreads.
 */
export function dockerignore(text: string): (relative: string) => boolean {
  const patterns = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      if (l.startsWith("!")) throw new Error(`.dockerignore exceptions are not replayed: ${l}`);
      return path.posix.normalize(l.replace(/^\/+/, "")).replace(/\/+$/, "");
    });
  return (relative) =>
    patterns.some(
      (p) =>
        relative === p ||
        relative.startsWith(`${p}/`) ||
        path.matchesGlob(relative, p) ||
        path.matchesGlob(relative, `${p}/**`),
    );
}

/** Runs a command to its end; rejects with its output when it fails. */
export function run(
  command: string,
  args: string[],
  options: { cwd: string; env: Record<string, string>; uid?: number; gid?: number },
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      uid: options.uid,
      gid: options.gid,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (c: Buffer) => {
      output += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      output += c.toString();
    });
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code === 0) resolve(output);
      else reject(new Error(`${command} ${args.join(" ")} exited with ${code}:\n${output}`));
    });
  });
}

/** Copies the build context's files (less the ignored ones) under `from` to `to`. */
export async function copyContext(
  context: string,
  from: string,
  to: string,
  ignored: (relative: string) => boolean,
): Promise<void> {
  const source = path.resolve(context, from);
  const relativeSource = path.relative(context, source).split(path.sep).join("/");
  if (relativeSource.startsWith("..")) throw new Error(`COPY ${from}: outside the build context`);
  const info = await stat(source);
  if (!info.isDirectory()) {
    if (relativeSource !== "" && ignored(relativeSource))
      throw new Error(`COPY ${from}: left out by .dockerignore`);
    await mkdir(path.dirname(to), { recursive: true });
    await cp(source, to);
    return;
  }
  await mkdir(to, { recursive: true });
  for (const entry of await readdir(source)) {
    const relative = relativeSource === "" ? entry : `${relativeSource}/${entry}`;
    if (ignored(relative)) continue;
    await cp(path.join(source, entry), path.join(to, entry), {
      recursive: true,
      filter: (src) => !ignored(path.relative(context, src).split(path.sep).join("/")),
    });
  }
}

/** Lets another user reach `dir` (mkdtemp makes it 0700), as an image's / would be. */
export async function openUp(dir: string): Promise<void> {
  await chmod(dir, 0o755);
}
