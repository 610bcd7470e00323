import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

// What a team that installs the client packages gets: `npm pack` of @keygate/client and
// @keygate/verify (each builds itself first), an install of the two tarballs into an empty
// project, its size, tsc over a script using every entry, and the script run against a live
// server.

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "..");
const tsc = path.join(root, "node_modules/.bin/tsc");
let keygate: TestKeygate;
let project: string;

beforeAll(async () => {
  keygate = await startTestKeygate();
  project = await mkdtemp(path.join(tmpdir(), "keygate-consumer-"));
}, 120_000);
afterAll(async () => {
  await keygate?.stop();
  if (project) await rm(project, { recursive: true, force: true });
});

/** Bytes and package folders under node_modules (a package is a folder with package.json). */
async function installed(dir: string): Promise<{ bytes: number; packages: string[] }> {
  let bytes = 0;
  const packages: string[] = [];
  const walk = async (at: string, rel: string) => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name);
      const name = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(full, name);
      else if (entry.isFile()) {
        bytes += (await stat(full)).size;
        if (
          entry.name === "package.json" &&
          /(^|\/)node_modules\/(@[^/]+\/)?[^/@]+\/package\.json$/.test(`node_modules/${name}`)
        )
          packages.push(path.dirname(name).replace(/^.*node_modules\//, ""));
      }
    }
  };
  await walk(path.join(dir, "node_modules"), "");
  return { bytes, packages: [...new Set(packages)].sort() };
}

async function pack(name: "client" | "verify") {
  const packed = await run("npm", ["pack", "--json", "--pack-destination", project], {
    cwd: path.join(root, "packages", name),
  });
  const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as {
    filename: string;
    size: number;
    files: { path: string }[];
  }[];
  if (!info) throw new Error("npm pack answered nothing");
  return info;
}

const consumerScript = `import {
  Code,
  ConnectError,
  createKeygateClient,
  ErrorReason,
  errorReason,
  type KeygateErrorReason,
  Role,
} from "@keygate/client";
import {
  createKeygateClient as createWebClient,
  memoryTokenStore,
  sessionStorageTokenStore,
} from "@keygate/client/web";
import { createVerifier, VerifyError } from "@keygate/verify";

// @ts-expect-error not a reason Keygate gives
const wrong: KeygateErrorReason = "NOT_A_REASON";
void wrong;
// Type-checked, never run.
export const refused = () =>
  // @ts-expect-error browsers cannot speak gRPC
  createWebClient({ baseUrl: "http://x", transport: "grpc" });
void sessionStorageTokenStore;

const baseUrl = process.env.KEYGATE_URL as string;
const adminKey = process.env.KEYGATE_ADMIN_KEY as string;
const workspaceId = process.env.KEYGATE_WORKSPACE_ID as string;
const email = \`packed-\${Date.now()}@example.test\`;
const password = "correct horse battery staple";

const workspaces: Record<string, number> = {};
for (const transport of ["grpc", "connect", "grpc-web"] as const) {
  const admin = createKeygateClient({ baseUrl, transport, adminKey });
  workspaces[transport] = (await admin.admin.listWorkspaces({})).workspaces.length;
}

const node = createKeygateClient({ baseUrl, transport: "grpc", workspaceId });
await node.auth.signUp({ email, password });
const login = await node.auth.login({ email, password });
const me = await node.auth.getSession({});
let reason: KeygateErrorReason | undefined;
let code: Code | undefined;
try {
  await node.auth.login({ email, password: "not the password at all" });
} catch (error) {
  reason = errorReason(error);
  code = error instanceof ConnectError ? error.code : undefined;
}

const web = createWebClient({ baseUrl, transport: "connect", workspaceId, tokens: memoryTokenStore() });
await web.auth.login({ email, password });
const fromWeb = await web.auth.getSession({});
const overGrpcWeb = createWebClient({
  baseUrl,
  transport: "grpc-web",
  tokens: memoryTokenStore(await web.tokens.get()),
});
const grpcWebEmail = (await overGrpcWeb.auth.getSession({})).user?.email;

const verifier = createVerifier({
  baseUrl,
  adminKey,
  audience: process.env.KEYGATE_AUDIENCE as string,
  issuer: process.env.KEYGATE_ISSUER as string,
});
await verifier.ready();
const verified = await verifier.verify(login.result.case === "tokens" ? login.result.value.accessToken : "");
let verifyRefusal: string | undefined;
try {
  await verifier.verify("not.a.token");
} catch (error) {
  verifyRefusal = error instanceof VerifyError ? error.reason : String(error);
}
await verifier.close();

process.stdout.write(
  JSON.stringify({
    verifiedRole: verified.role,
    verifiedUser: verified.userId === me.user?.id,
    refused: verifyRefusal,
    workspaces,
    loggedIn: login.result.case,
    email: me.user?.email,
    role: me.role === Role.MEMBER ? "member" : String(me.role),
    reason,
    reasonNumber: reason ? ErrorReason[reason] : undefined,
    unauthenticated: code === Code.Unauthenticated,
    webEmail: fromWeb.user?.email,
    webSession: (await web.tokens.get())?.sessionId === fromWeb.session?.id,
    grpcWebEmail,
  }),
);
`;

describe("the client packages", () => {
  it("pack, install alone from their tarballs, type-check and run against a live server", async () => {
    const client = await pack("client");
    const verify = await pack("verify");
    for (const [info, entries] of [
      [client, ["src/client/index", "src/client/web"]],
      [verify, ["src/verify/index"]],
    ] as const) {
      const files = info.files.map((f) => f.path);
      for (const entry of entries) {
        expect(files).toContain(`dist/${entry}.js`);
        expect(files).toContain(`dist/${entry}.d.ts`);
      }
      for (const doc of ["README.md", "CHANGELOG.md", "LICENSE", "package.json"])
        expect(files).toContain(doc);
      // Nothing of the service: no server code, tests, migrations or proto sources.
      expect(
        files.filter(
          (f) =>
            !/^(dist\/(src\/(client|verify)|gen)\/|[A-Z]|package\.json$)/.test(f) &&
            !/^dist\/src\/(revocation-set|resource-identifiers)\.(js|d\.ts)$/.test(f),
        ),
      ).toEqual([]);
    }

    await writeFile(
      path.join(project, "package.json"),
      JSON.stringify({ name: "consumer", private: true, type: "module" }),
    );
    const npmInstall = (...specs: string[]) =>
      run(
        "npm",
        ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline", ...specs],
        {
          cwd: project,
        },
      );
    await npmInstall(`./${client.filename}`, `./${verify.filename}`);
    const size = await installed(project);
    console.log(
      `installed @keygate/client and @keygate/verify: ${(size.bytes / 1024 / 1024).toFixed(1)} MB in ${size.packages.length} packages (${size.packages.join(", ")}); tarballs ${(client.size / 1024).toFixed(0)} kB and ${(verify.size / 1024).toFixed(0)} kB`,
    );
    const forbidden =
      /pglite|opentelemetry|^pg$|^pg-|slonik|pino|piscina|nodemailer|bcryptjs|zod|^keygate$|tsx|esbuild/;
    expect(
      size.packages.filter(
        (p) => forbidden.test(p.split("/").pop() as string) || forbidden.test(p),
      ),
    ).toEqual([]);
    expect(size.bytes).toBeLessThan(10 * 1024 * 1024);

    await npmInstall("@types/node@24.19.2");
    await mkdir(path.join(project, "src"));
    await writeFile(path.join(project, "src/main.ts"), consumerScript);
    await writeFile(
      path.join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2023",
          lib: ["ES2023", "DOM"],
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          skipLibCheck: false,
          types: ["node"],
          outDir: "out",
          rootDir: "src",
        },
        include: ["src"],
      }),
    );
    await run(tsc, ["-p", "tsconfig.json"], { cwd: project });

    const result = await run(process.execPath, ["out/main.js"], {
      cwd: project,
      env: {
        ...process.env,
        KEYGATE_URL: keygate.url,
        KEYGATE_ADMIN_KEY: keygate.bootstrapped?.adminKey,
        KEYGATE_WORKSPACE_ID: keygate.bootstrapped?.workspaceId,
        KEYGATE_AUDIENCE: keygate.config.audience,
        KEYGATE_ISSUER: keygate.config.issuer,
      },
    });
    const out = JSON.parse(result.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({
      workspaces: { grpc: 1, connect: 1, "grpc-web": 1 },
      loggedIn: "tokens",
      role: "member",
      reason: "INVALID_CREDENTIALS",
      reasonNumber: 2,
      unauthenticated: true,
      webSession: true,
      verifiedRole: "member",
      verifiedUser: true,
      refused: "invalid",
    });
    expect(out.email).toMatch(/^packed-/);
    expect(out.webEmail).toBe(out.email);
    expect(out.grpcWebEmail).toBe(out.email);
  }, 300_000);

  it("has a browser entry that imports nothing made for Node", async () => {
    // Follows every import from the installed web entry; only browser-safe packages may appear.
    const allowed = /^(@connectrpc\/connect|@connectrpc\/connect-web|@bufbuild\/protobuf)(\/|$)/;
    const start = path.join(project, "node_modules/@keygate/client/dist/src/client/web.js");
    const seen = new Set<string>();
    const bare = new Set<string>();
    const queue = [start];
    while (queue.length > 0) {
      const file = queue.pop() as string;
      if (seen.has(file)) continue;
      seen.add(file);
      const text = await readFile(file, "utf8");
      for (const match of text.matchAll(/(?:^|\n)\s*(?:import|export)[^"';]*?from\s*"([^"]+)"/g)) {
        const specifier = match[1] as string;
        if (specifier.startsWith(".")) queue.push(path.resolve(path.dirname(file), specifier));
        else bare.add(specifier);
      }
    }
    expect(seen.size).toBeGreaterThan(5);
    expect([...bare].filter((s) => !allowed.test(s))).toEqual([]);
    expect(bare).toContain("@connectrpc/connect-web");
  });
});
