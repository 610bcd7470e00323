import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

// What a team that installs the packed Keygate gets: the build, `npm pack`, an install of the
// tarball into an empty project, tsc over a script using both entries, and the script run
// against a live server.

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

const consumerScript = `import {
  Code,
  ConnectError,
  createKeygateClient,
  ErrorReason,
  errorReason,
  type KeygateErrorReason,
  Role,
} from "keygate/client";
import {
  createKeygateClient as createWebClient,
  memoryTokenStore,
  sessionStorageTokenStore,
} from "keygate/client/web";

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

process.stdout.write(
  JSON.stringify({
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

describe("the packed package", () => {
  it("installs elsewhere, type-checks and runs against a live server", async () => {
    await run("npm", ["run", "build:client"], { cwd: root });
    const packed = await run(
      "npm",
      ["pack", "--ignore-scripts", "--json", "--pack-destination", project],
      { cwd: root },
    );
    const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
    if (!info) throw new Error("npm pack answered nothing");
    const files = info.files.map((f) => f.path);
    for (const entry of ["index", "web"]) {
      expect(files).toContain(`dist/src/client/${entry}.js`);
      expect(files).toContain(`dist/src/client/${entry}.d.ts`);
    }
    expect(files.some((f) => f.startsWith("test/"))).toBe(false);

    await writeFile(
      path.join(project, "package.json"),
      JSON.stringify({
        name: "consumer",
        private: true,
        type: "module",
        dependencies: { keygate: `file:./${info.filename}`, "@types/node": "24.19.2" },
      }),
    );
    await run(
      "npm",
      ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"],
      { cwd: project },
    );
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
    });
    expect(out.email).toMatch(/^packed-/);
    expect(out.webEmail).toBe(out.email);
    expect(out.grpcWebEmail).toBe(out.email);
  }, 240_000);

  it("has a browser entry that imports nothing made for Node", async () => {
    // Follows every import from the installed web entry; only browser-safe packages may appear.
    const allowed = /^(@connectrpc\/connect|@connectrpc\/connect-web|@bufbuild\/protobuf)(\/|$)/;
    const start = path.join(project, "node_modules/keygate/dist/src/client/web.js");
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
