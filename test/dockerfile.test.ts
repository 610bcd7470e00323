import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  copyContext,
  dockerignore,
  execForm,
  type Instruction,
  openUp,
  parseDockerfile,
  parseEnv,
  run,
  splitFlags,
} from "./support/dockerfile.js";
import { freePort, until } from "./support/wait.js";

/**
 * deploy/Dockerfile replayed without a container engine: every stage gets a scratch folder
 * as its "/", each COPY puts its files there (the build context less .dockerignore, or
 * another stage's folder), each RUN runs in order with the stage's ENV and WORKDIR, and the
 * final ENTRYPOINT + CMD is started and must answer /readyz. The steps come from the file, so
 * a step that breaks the image build breaks this test.
 *
 * What stands in for the base image: this machine's /bin/sh and Debian userland, and the
 * Node 24 the project pins (its `node` dev dependency) first on PATH, as node:24-bookworm-slim
 * has it. `npm ci` runs for real, against npm's cache in $HOME with --prefer-offline (about
 * 10 s when that cache is warm, minutes when every package is revalidated); a later stage built FROM an earlier one starts from a hard-linked copy
 * of its folder. `--chown` is not replayed (every file keeps this user's ownership), but USER
 * is: as root, the final command runs as that uid, so a data directory it cannot write fails
 * here as in the image. Listeners bind to loopback only (KEYGATE_HOST is overridden).
 */

const repo = path.resolve(import.meta.dirname, "..");
const dockerfilePath = path.join(repo, "deploy/Dockerfile");
const node24 = path.dirname(path.join(repo, "node_modules/node/bin/node"));

function registryAccess(): Record<string, string> {
  const names =
    /^(NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|https?_proxy|no_proxy|npm_config_(registry|cafile|proxy|https_proxy|noproxy))$/i;
  return Object.fromEntries(
    Object.entries(process.env).filter(
      (e): e is [string, string] => names.test(e[0]) && e[1] !== undefined,
    ),
  );
}

interface Stage {
  readonly name: string | undefined;
  readonly root: string;
  workdir: string;
  env: Record<string, string>;
  user: string | undefined;
}

interface Replay {
  readonly stages: Stage[];
  readonly final: Stage;
  readonly entrypoint: string[];
  readonly cmd: string[];
  readonly healthcheck: string[] | undefined;
  /** Maps a path of the image to the scratch folder of a stage. */
  inImage(stage: Stage, imagePath: string): string;
}

async function replay(scratch: string, log: (line: string) => void): Promise<Replay> {
  const instructions = parseDockerfile(await readFile(dockerfilePath, "utf8"));
  const ignoreFile = `${dockerfilePath}.dockerignore`;
  const ignored = dockerignore(
    existsSync(ignoreFile)
      ? await readFile(ignoreFile, "utf8")
      : existsSync(path.join(repo, ".dockerignore"))
        ? await readFile(path.join(repo, ".dockerignore"), "utf8")
        : "",
  );
  const stages: Stage[] = [];
  // Paths the file itself makes (WORKDIR, COPY destinations, absolute ENV values): in RUN
  // text they mean the stage's folder; any other absolute path is the machine's own.
  const imagePaths = new Set<string>();
  const inImage = (stage: Stage, p: string) => path.join(stage.root, p);
  const mapText = (stage: Stage, text: string) => {
    let out = text;
    for (const p of [...imagePaths].sort((a, b) => b.length - a.length)) {
      const escaped = p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      out = out.replace(
        new RegExp(`(^|[\\s"'=])${escaped}(?=$|[/\\s"';&|])`, "g"),
        (_, lead: string) => `${lead}${inImage(stage, p)}`,
      );
    }
    return out;
  };
  const envOf = (stage: Stage) => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(stage.env))
      env[k] = v.startsWith("/") ? inImage(stage, v) : v;
    return env;
  };
  const userIds = (user: string | undefined) => {
    if (user === undefined || process.getuid?.() !== 0) return {};
    const [uid, gid] = user.split(":");
    if (!/^\d+$/.test(uid as string))
      throw new Error(`USER ${user}: only numeric users are replayed`);
    return { uid: Number(uid), gid: Number(gid ?? uid) };
  };
  let entrypoint: string[] = [];
  let cmd: string[] = [];
  let healthcheck: string[] | undefined;
  let current: Stage | undefined;
  const at = (i: Instruction) => `deploy/Dockerfile:${i.line} ${i.keyword}`;

  for (const instruction of instructions) {
    const { keyword, args } = instruction;
    log(`${at(instruction)} ${args.split("\n")[0]}`);
    if (keyword === "FROM") {
      const match = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!match) throw new Error(`${at(instruction)}: cannot read "${args}"`);
      const base = stages.find((s) => s.name === match[1]);
      const root = path.join(scratch, `stage-${stages.length}`);
      if (base) {
        await run("cp", ["-al", base.root, root], {
          cwd: scratch,
          env: { PATH: process.env.PATH ?? "" },
        });
      } else {
        await mkdir(root, { recursive: true });
      }
      await openUp(root);
      current = {
        name: match[2],
        root,
        workdir: base?.workdir ?? "/",
        env: { ...base?.env },
        user: base?.user,
      };
      stages.push(current);
      entrypoint = [];
      cmd = [];
      healthcheck = undefined;
      continue;
    }
    if (!current) throw new Error(`${at(instruction)} before FROM`);
    const stage = current;
    switch (keyword) {
      case "WORKDIR": {
        stage.workdir = path.posix.resolve(stage.workdir, args);
        imagePaths.add(stage.workdir);
        await mkdir(inImage(stage, stage.workdir), { recursive: true });
        break;
      }
      case "ENV": {
        for (const [name, value] of parseEnv(args)) {
          stage.env[name] = value;
          if (value.startsWith("/")) imagePaths.add(value);
        }
        break;
      }
      case "COPY": {
        const { flags, rest } = splitFlags(args);
        const parts = execForm(rest) ?? rest.split(/\s+/);
        const sources = parts.slice(0, -1);
        const destText = parts.at(-1) as string;
        const dest = path.posix.resolve(stage.workdir, destText);
        imagePaths.add(dest);
        const intoDirectory = sources.length > 1 || destText.endsWith("/") || destText === ".";
        for (const source of sources) {
          if (flags.from !== undefined) {
            const from = stages.find((s) => s.name === flags.from);
            if (!from) throw new Error(`${at(instruction)}: no stage named ${flags.from}`);
            const src = inImage(from, path.posix.resolve(from.workdir, source));
            const target = inImage(stage, dest);
            await mkdir(target, { recursive: true });
            // A directory's contents go into the destination, as COPY does.
            await run("cp", ["-al", `${src}/.`, target], {
              cwd: scratch,
              env: { PATH: process.env.PATH ?? "" },
            });
            continue;
          }
          const isDirectory = (await stat(path.resolve(repo, source))).isDirectory();
          const target =
            intoDirectory && !isDirectory
              ? path.join(inImage(stage, dest), path.basename(source))
              : inImage(stage, dest);
          await copyContext(repo, source, target, ignored);
        }
        break;
      }
      case "RUN": {
        const exec = execForm(args);
        const argv = exec ?? ["/bin/sh", "-c", mapText(stage, args)];
        await run(argv[0] as string, argv.slice(1), {
          cwd: inImage(stage, stage.workdir),
          env: {
            ...envOf(stage),
            // The base image's Node, and npm's cache where npm keeps it here, taken as it is
            // (a hint of where to fetch from, not of what to install: the lock file decides).
            PATH: `${node24}:${process.env.PATH ?? ""}`,
            HOME: process.env.HOME ?? "/root",
            npm_config_prefer_offline: "true",
            // How this machine reaches the registry (its CA bundle, a proxy), as a build host
            // hands it to docker build.
            ...registryAccess(),
          },
          ...userIds(stage.user),
        });
        break;
      }
      case "USER":
        stage.user = args;
        break;
      case "ENTRYPOINT":
        entrypoint = execForm(args) ?? ["/bin/sh", "-c", args];
        break;
      case "CMD":
        cmd = execForm(args) ?? ["/bin/sh", "-c", args];
        break;
      case "HEALTHCHECK": {
        const { rest } = splitFlags(args.replace(/\n/g, " "));
        const match = /^CMD\s+([\s\S]+)$/.exec(rest.trim());
        healthcheck = match
          ? (execForm(match[1] as string) ?? ["/bin/sh", "-c", match[1] as string])
          : undefined;
        break;
      }
      case "EXPOSE":
      case "LABEL":
        break;
      default:
        throw new Error(`${at(instruction)}: not replayed by this test`);
    }
  }
  const final = stages.at(-1);
  if (!final) throw new Error("deploy/Dockerfile has no FROM");
  return { stages, final, entrypoint, cmd, healthcheck, inImage };
}

describe("deploy/Dockerfile, replayed stage by stage", { timeout: 600_000 }, () => {
  let scratch: string;
  let image: Replay;
  const steps: string[] = [];
  let server: ChildProcess | undefined;
  let serverOutput = "";

  beforeAll(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), "keygate-image-"));
    await openUp(scratch);
    image = await replay(scratch, (line) => steps.push(line));
  }, 600_000);

  afterAll(async () => {
    if (server && server.exitCode === null) {
      server.kill("SIGKILL");
      await new Promise((resolve) => server?.once("exit", resolve));
    }
    await rm(scratch, { recursive: true, force: true });
  });

  it("builds: every RUN of every stage succeeds", () => {
    expect(steps.filter((s) => / RUN /.test(s)).length).toBeGreaterThanOrEqual(3);
    expect(image.stages.length).toBeGreaterThanOrEqual(2);
  });

  it("leaves dev dependencies out of the image, and in the stage compose's test profile runs", async () => {
    const app = (stage: Stage) => image.inImage(stage, stage.workdir);
    expect(existsSync(path.join(app(image.final), "node_modules/tsx"))).toBe(true);
    expect(existsSync(path.join(app(image.final), "node_modules/vitest"))).toBe(false);
    // patches/ is applied in the image too (the package's postinstall is skipped there).
    const serialization = await readFile(
      path.join(
        app(image.final),
        "node_modules/@connectrpc/connect/dist/esm/protocol/serialization.js",
      ),
      "utf8",
    );
    expect(serialization).toContain("`parse binary: ${m}`, Code.InvalidArgument");
    const compose = await readFile(path.join(repo, "deploy/compose.yaml"), "utf8");
    const testService = /\n {2}test:\n(?: {4}.*\n)*/.exec(compose)?.[0] ?? "";
    const target = /target:\s*([\w.-]+)/.exec(testService)?.[1];
    const stage = image.stages.find((s) => s.name === target);
    expect(stage, `compose's test service builds target ${target}`).toBeDefined();
    const pkg = JSON.parse(await readFile(path.join(repo, "package.json"), "utf8")) as {
      devDependencies: Record<string, string>;
    };
    for (const dev of Object.keys(pkg.devDependencies))
      expect(existsSync(path.join(app(stage as Stage), "node_modules", dev)), dev).toBe(true);
    // What the profile runs (npm run check, npm test) finds its tools.
    for (const tool of ["tsc", "biome", "buf", "vitest"])
      expect(existsSync(path.join(app(stage as Stage), "node_modules/.bin", tool)), tool).toBe(
        true,
      );
  });

  it("starts with its ENTRYPOINT and CMD and answers /readyz, and its HEALTHCHECK agrees", async () => {
    const final = image.final;
    const argv = [...image.entrypoint, ...image.cmd];
    expect(argv.length).toBeGreaterThan(0);
    const port = await freePort();
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(final.env))
      env[k] = v.startsWith("/") ? image.inImage(final, v) : v;
    Object.assign(env, {
      PATH: `${node24}:${process.env.PATH ?? ""}`,
      KEYGATE_HOST: "127.0.0.1",
      KEYGATE_PORT: String(port),
      KEYGATE_METRICS_PORT: "0",
    });
    const ids =
      final.user !== undefined && process.getuid?.() === 0
        ? (() => {
            const [uid, gid] = (final.user as string).split(":");
            return { uid: Number(uid), gid: Number(gid ?? uid) };
          })()
        : {};
    server = spawn(argv[0] as string, argv.slice(1), {
      cwd: image.inImage(final, final.workdir),
      env,
      stdio: ["ignore", "pipe", "pipe"],
      ...ids,
    });
    server.stdout?.on("data", (c: Buffer) => {
      serverOutput += c.toString();
    });
    server.stderr?.on("data", (c: Buffer) => {
      serverOutput += c.toString();
    });
    const readyz = `http://127.0.0.1:${port}/readyz`;
    await until(async () => {
      if (server?.exitCode !== null)
        throw new Error(`the image's command exited with ${server?.exitCode}:\n${serverOutput}`);
      return fetch(readyz).then(
        (r) => r.ok,
        () => false,
      );
    }, 120_000);
    const res = await fetch(readyz);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ready" });
    expect(image.healthcheck).toBeDefined();
    const health = image.healthcheck as string[];
    await run(health[0] as string, health.slice(1), {
      cwd: image.inImage(final, final.workdir),
      env,
      ...ids,
    });
    server.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) =>
      server?.exitCode !== null ? resolve(server?.exitCode ?? null) : server?.once("exit", resolve),
    );
    expect(code).toBe(0);
  });
});
