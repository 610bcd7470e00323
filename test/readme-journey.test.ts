import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { externalDatabaseEnv, freshDatabaseUrl } from "./support/database.js";
import { until } from "./support/wait.js";

/**
 * The README's quick start, as a newcomer follows it: `keygate serve` as a process, and the
 * curl lines of "A first user with curl" run as they are written (only the port changes),
 * with the variables the reader fills in (the workspace id the first start printed, the code
 * from the mail on the console, the tokens of the last answer) filled the same way. Each
 * `# {…}` line after a curl is checked against the answer, so the README and the behaviour
 * cannot drift apart. Also what the first start prints: the web app's URL, the development
 * rate limits, and readable lines on a terminal.
 */

const root = path.resolve(import.meta.dirname, "..");
const bin = path.join(root, "bin/keygate.mjs");
const documentedUrl = "http://127.0.0.1:8080";

interface Server {
  child: ChildProcess;
  url: string;
  output: () => string;
  exit: Promise<number | null>;
}

function serve(
  env: Record<string, string>,
  command: string[] = [process.execPath, bin, "serve"],
): Promise<Server> {
  const child = spawn(command[0] as string, command.slice(1), {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", KEYGATE_PORT: "0", KEYGATE_METRICS_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exit = new Promise<number | null>((resolve) => child.once("exit", resolve));
  child.stdout?.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr?.on("data", (c: Buffer) => {
    out += c.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      // JSON lines, or pino-pretty's `url: "…"` on a terminal.
      const line = out.split("\n").find((l) => l.includes("keygate listening"));
      const match = line && /"url":"(http:\/\/[^"]+)"/.exec(line);
      if (match) {
        clearInterval(timer);
        resolve({ child, url: match[1] as string, output: () => out, exit });
      }
    }, 20);
    exit.then((code) => {
      clearInterval(timer);
      reject(new Error(`exited with ${code}:\n${out}`));
    });
  });
}

async function stop(server: Server | undefined): Promise<void> {
  if (!server) return;
  server.child.kill("SIGTERM");
  await server.exit;
}

/** The shell lines of the README block after `heading`, continuations joined. */
async function readmeBlock(heading: string): Promise<string[]> {
  const readme = await readFile(path.join(root, "README.md"), "utf8");
  const at = readme.indexOf(heading);
  expect(at, `README has "${heading}"`).toBeGreaterThan(-1);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(at))?.[1] ?? "";
  return block
    .replace(/\\\n/g, " ")
    .split("\n")
    .filter((l) => l.trim() !== "");
}

/** Every key of every object in `value`, with the values seen under it. */
function entries(value: unknown, into = new Map<string, unknown[]>()): Map<string, unknown[]> {
  if (Array.isArray(value)) for (const v of value) entries(v, into);
  else if (value && typeof value === "object")
    for (const [k, v] of Object.entries(value)) {
      into.set(k, [...(into.get(k) ?? []), v]);
      entries(v, into);
    }
  return into;
}

/** Checks an answer against the README's `# {…}` line: every key it names, every literal. */
function expectShape(answer: unknown, comment: string, curl: string): void {
  const shape = comment.replace(/^#\s*/, "").trim();
  if (shape === "{}") {
    expect(answer, curl).toEqual({});
    return;
  }
  const seen = entries(answer);
  for (const [, key] of shape.matchAll(/"([A-Za-z_]+)":/g))
    expect(
      seen.has(key as string),
      `${curl}\nanswer lacks "${key}": ${JSON.stringify(answer)}`,
    ).toBe(true);
  for (const [, key, literal] of shape.matchAll(/"([A-Za-z_]+)":("[^"…]*"|true|false)(?=[,}])/g)) {
    const value = JSON.parse(literal as string) as unknown;
    expect(seen.get(key as string), `${curl}\n"${key}" should be ${literal}`).toContainEqual(value);
  }
}

describe("the README's quick start, run as written", { timeout: 120_000 }, () => {
  let dataDir: string;
  let db: Awaited<ReturnType<typeof freshDatabaseUrl>>;
  let server: Server | undefined;
  let env: Record<string, string>;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "keygate-readme-"));
    db = await freshDatabaseUrl();
    env = {
      KEYGATE_DATA_DIR: dataDir,
      KEYGATE_MIGRATE_ON_START: "true",
      KEYGATE_UI: "true",
      ...externalDatabaseEnv(db.url),
    };
  });
  afterAll(async () => {
    await stop(server);
    await db?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("a first user with curl: sign-up, verify, login, session, refresh, logout", async () => {
    server = await serve(env);
    const running = server;
    await until(
      async () => /First start: created workspace "default" \(/.test(running.output()),
      10_000,
    );
    const workspaceId = /created workspace "default" \(([0-9a-f-]{36})\)/.exec(
      running.output(),
    )?.[1];
    expect(workspaceId).toBeDefined();

    const lines = await readmeBlock("A first user with curl");
    const vars: Record<string, string> = {};
    let last: unknown;
    let lastCurl: string | undefined;
    const curls: string[] = [];
    for (const line of lines) {
      if (line.startsWith("#")) {
        if (lastCurl === undefined)
          throw new Error(`an answer line with no curl before it: ${line}`);
        expectShape(last, line, lastCurl);
        lastCurl = undefined;
        continue;
      }
      if (line.startsWith("curl ")) {
        const command = line.replaceAll(documentedUrl, running.url);
        const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
          const child = spawn("bash", ["-c", command], {
            env: { PATH: process.env.PATH ?? "", ...vars },
            stdio: ["ignore", "pipe", "inherit"],
          });
          let out = "";
          child.stdout.on("data", (c: Buffer) => {
            out += c.toString();
          });
          child.once("exit", (code) => resolve({ code, out }));
        });
        expect(result.code, line).toBe(0);
        last = JSON.parse(result.out);
        lastCurl = line;
        curls.push(/AuthService\/(\w+)/.exec(line)?.[1] ?? line);
        continue;
      }
      // NAME=value … # where it comes from: what the reader fills in, filled the same way.
      const assignments = [...line.replace(/#.*$/, "").matchAll(/([A-Z_]+)=\S+/g)].map(
        (m) => m[1] as string,
      );
      expect(
        assignments.length,
        `a line this test does not know how to follow: ${line}`,
      ).toBeGreaterThan(0);
      for (const name of assignments) {
        if (name === "WORKSPACE_ID") vars[name] = workspaceId as string;
        else if (name === "CODE") {
          // The dev outbox prints the mail to the console.
          let code: string | undefined;
          await until(async () => {
            const mail = /--- dev outbox: [^\n]*\nTo: ada@example\.com\n[\s\S]*?\n---\n/.exec(
              running.output(),
            );
            code = mail ? /\b(\d{6})\b/.exec(mail[0])?.[1] : undefined;
            return code !== undefined;
          }, 15_000);
          vars[name] = code as string;
        } else if (name === "ACCESS_TOKEN" || name === "REFRESH_TOKEN") {
          const tokens = (last as { tokens?: { accessToken?: string; refreshToken?: string } })
            .tokens;
          const value = name === "ACCESS_TOKEN" ? tokens?.accessToken : tokens?.refreshToken;
          expect(value, `${name} from the answer before it`).toBeTruthy();
          vars[name] = value as string;
        } else throw new Error(`the README sets ${name}, which this test cannot fill in`);
      }
    }
    expect(curls).toEqual(["SignUp", "VerifyEmail", "Login", "GetSession", "Refresh", "Logout"]);
    // Logged out: the last refresh token no longer works.
    const after = await fetch(`${running.url}/keygate.v1.AuthService/Refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: vars.REFRESH_TOKEN }),
    });
    expect(after.status).toBe(401);
  });

  it("the first start names the web app's URL and, embedded, the development rate limits", () => {
    const out = server?.output() ?? "";
    const listening = out.split("\n").find((l) => l.includes('"msg":"keygate listening"'));
    expect(JSON.parse(listening as string).webAppUrl).toBe(`${server?.url}/ui/`);
    const warning = out.split("\n").find((l) => l.includes("development rate limits"));
    if (db.url === undefined) {
      expect(JSON.parse(warning as string)).toMatchObject({
        level: "warn",
        rateLimits: "development",
      });
      expect(warning).toContain("login 100 per 15 min per IP");
    } else {
      // An external database is never development: the production limits, and no warning.
      expect(warning).toBeUndefined();
    }
  });

  it("prints readable lines, not JSON, when stdout is a terminal", async () => {
    await stop(server);
    server = undefined;
    // util-linux script(1) gives the process a pseudo-terminal, as a person's shell would.
    const tty = await serve(env, [
      "script",
      "-q",
      "-e",
      "-c",
      `${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} serve`,
      "/dev/null",
    ]);
    try {
      const line = tty
        .output()
        // biome-ignore lint/suspicious/noControlCharactersInRegex: the terminal's colour codes
        .replace(/\u001b\[[0-9;]*m/g, "")
        .split(/\r?\n/)
        .find((l) => l.includes("keygate listening")) as string;
      expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: keygate listening /);
      expect(line).toContain(`"webAppUrl":"${tty.url}/ui/"`);
    } finally {
      await stop(tty);
    }
  });
});
