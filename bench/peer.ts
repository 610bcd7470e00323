/**
 * Keygate against a peer, better-auth (email and password, its Kysely adapter over a `pg`
 * pool), on the same PostgreSQL server, each on a scratch database of its own, driven from the
 * same load-generator process with the same workload, one after the other:
 * - login: Keygate's Login against better-auth's POST /api/auth/sign-in/email;
 * - session check: Keygate's GetSession with the access token (the signed-in call that checks
 *   the live session) against better-auth's GET /api/auth/get-session with the session cookie
 *   (no cookie cache: it reads the session from the database, as GetSession does).
 * Both over JSON on keep-alive HTTP/1.1 (Keygate through the Connect protocol), same pool
 * size. better-auth is measured twice: with its default password hash (scrypt), as it ships,
 * and with bcryptjs at Keygate's cost, so that the login difference is the service, not the
 * hash. It is a dev dependency for this benchmark only.
 *
 *   DATABASE_URL=postgres://... npm run bench -- peer [ms=5000] [concurrency=8]
 */
import { fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import bcrypt from "bcryptjs";
import pg from "pg";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { Role } from "../gen/keygate/v1/types_pb.js";
import {
  closedLoop,
  loadGenerator,
  quantile,
  type Ratio,
  round,
  scratchDatabase,
  serveJobs,
  startBenchKeygate,
} from "./support.js";

const self = fileURLToPath(import.meta.url);
const password = "correct horse battery staple";

interface Figures {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  calls: number;
}

type Job =
  | { kind: "keygate"; url: string; emails: string[]; workspaceId: string; ms: number; n: number }
  | { kind: "better-auth"; url: string; emails: string[]; ms: number; n: number };

const figures = (run: { perSecond: number; latencies: number[] }): Figures => ({
  perSecond: round(run.perSecond, 1),
  p50Ms: round(quantile(run.latencies, 0.5), 2),
  p99Ms: round(quantile(run.latencies, 0.99), 2),
  calls: run.latencies.length,
});

// ---- the load generator: the same two measurements against either service ----

async function client(): Promise<void> {
  const drive = async (job: Job): Promise<{ login: Figures; session: Figures }> => {
    // Sign every user in once, then time sign-ins, then session checks cycling through the
    // credentials the first sign-ins got.
    const measure = async <C>(
      signIn: (email: string) => Promise<C>,
      check: (credential: C) => Promise<void>,
    ) => {
      const credentials = await Promise.all(job.emails.map(signIn));
      let i = 0;
      const login = figures(
        await closedLoop(
          () => signIn(job.emails[i++ % job.emails.length] as string),
          job.ms,
          job.n,
        ),
      );
      let c = 0;
      const session = figures(
        await closedLoop(() => check(credentials[c++ % credentials.length] as C), job.ms, job.n),
      );
      return { login, session };
    };
    if (job.kind === "keygate") {
      const auth = createClient(
        AuthService,
        createConnectTransport({ baseUrl: job.url, httpVersion: "1.1", useBinaryFormat: false }),
      );
      return measure(
        async (email) => {
          const res = await auth.login({ email, password, workspaceId: job.workspaceId });
          if (res.result.case !== "tokens") throw new Error("Login answered no tokens");
          return res.result.value.accessToken;
        },
        async (token) => {
          const res = await auth.getSession({}, { headers: { authorization: `Bearer ${token}` } });
          if (!res.session) throw new Error("GetSession answered no session");
        },
      );
    }
    return measure(
      async (email) => {
        const res = await fetch(`${job.url}/api/auth/sign-in/email`, {
          method: "POST",
          // As a browser on the service's own origin sends it (better-auth refuses a sign-in
          // without an Origin, its CSRF defence).
          headers: { "content-type": "application/json", origin: job.url },
          body: JSON.stringify({ email, password }),
        });
        if (res.status !== 200)
          throw new Error(`sign-in answered ${res.status}: ${await res.text()}`);
        await res.arrayBuffer();
        return res.headers
          .getSetCookie()
          .map((c) => c.split(";")[0])
          .join("; ");
      },
      async (cookie) => {
        const res = await fetch(`${job.url}/api/auth/get-session`, { headers: { cookie } });
        const body = (await res.json()) as { session?: unknown } | null;
        if (res.status !== 200 || !body?.session) throw new Error("get-session found no session");
      },
    );
  };
  serveJobs(drive);
}

// ---- better-auth, served in a process of its own ----

interface PeerConfig {
  databaseUrl: string;
  poolSize: number;
  emails: string[];
  /** "scrypt": better-auth's default; a number: bcryptjs at that cost. */
  hash: "scrypt" | number;
}

async function betterAuthServer(): Promise<void> {
  const { betterAuth } = await import("better-auth");
  const { getMigrations } = await import("better-auth/db/migration");
  const { toNodeHandler } = await import("better-auth/node");
  const config = await new Promise<PeerConfig>((resolve) => process.once("message", resolve));
  let handle: http.RequestListener = (_req, res) => res.writeHead(503).end();
  const server = http.createServer((req, res) => handle(req, res));
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const cost = config.hash;
  const options = {
    baseURL: url,
    secret: randomBytes(32).toString("base64"),
    database: new pg.Pool({ connectionString: config.databaseUrl, max: config.poolSize }),
    emailAndPassword: {
      enabled: true,
      ...(cost === "scrypt"
        ? {}
        : {
            password: {
              hash: (plain: string) => bcrypt.hash(plain, cost),
              verify: ({ hash, password: plain }: { hash: string; password: string }) =>
                bcrypt.compare(plain, hash),
            },
          }),
    },
    // Keygate's benchmarks lift its rate limits too.
    rateLimit: { enabled: false },
    telemetry: { enabled: false },
  };
  const { runMigrations } = await getMigrations(options);
  await runMigrations();
  const auth = betterAuth(options);
  for (const [i, email] of config.emails.entries()) {
    await auth.api.signUpEmail({ body: { email, password, name: `Peer ${i}` } });
  }
  handle = toNodeHandler(auth);
  process.send?.({ url });
  process.on("disconnect", () => process.exit(0));
}

// ---- the benchmark ----

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 5_000);
  const n = Number(args[1] ?? 8);
  if (!process.env.DATABASE_URL) {
    console.log("\npeer: skipped, needs DATABASE_URL (the peer runs on PostgreSQL)");
    return { skipped: "DATABASE_URL is not set" };
  }
  const emails = Array.from({ length: n * 4 }, (_, i) => `peer-${i}@example.test`);
  const results: Record<string, { login: Figures; session: Figures }> = {};
  const generator = await loadGenerator(self);
  const keygate = await startBenchKeygate();
  const cost = keygate.config.bcryptCost;
  try {
    const admin = createClient(
      AdminService,
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
    );
    const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    for (const email of emails) {
      await admin.provisionUser(
        {
          email,
          password,
          workspaceId: keygate.workspaceId,
          role: Role.MEMBER,
          emailVerified: true,
        },
        root,
      );
    }
    results.Keygate = await generator.ask({
      kind: "keygate",
      url: keygate.url,
      emails,
      workspaceId: keygate.workspaceId,
      ms,
      n,
    } satisfies Job);
  } finally {
    await keygate.stop();
  }
  try {
    for (const hash of [cost, "scrypt"] as const) {
      const scratch = await scratchDatabase(process.env.DATABASE_URL, "better_auth_bench");
      const child = fork(self, ["better-auth"], { execArgv: ["--import", "tsx"] });
      try {
        const ready = new Promise<{ url: string }>((resolve, reject) => {
          child.once("message", resolve as never);
          child.once("exit", (code) => reject(new Error(`better-auth exited (${code})`)));
        });
        child.send({
          databaseUrl: scratch.url,
          poolSize: keygate.config.dbPoolSize,
          emails,
          hash,
        } satisfies PeerConfig);
        const { url } = await ready;
        const name = hash === "scrypt" ? "better-auth (scrypt)" : `better-auth (bcrypt ${cost})`;
        results[name] = await generator.ask({
          kind: "better-auth",
          url,
          emails,
          ms,
          n,
        } satisfies Job);
      } finally {
        child.removeAllListeners("exit");
        child.kill();
        await new Promise((r) => setTimeout(r, 200));
        await scratch.drop();
      }
    }
  } finally {
    generator.child.disconnect();
  }

  const ours = results.Keygate as { login: Figures; session: Figures };
  const peerSameHash = results[`better-auth (bcrypt ${cost})`] as typeof ours;
  const ratio = (a: number, b: number) => round(a / b, 2);
  console.log(
    `\npeer: Keygate against better-auth ${betterAuthVersion()} on the same PostgreSQL, JSON over ` +
      `keep-alive HTTP/1.1 from one load-generator process, ${n} in flight over ${emails.length} ` +
      `users, ${ms} ms each; Keygate bcrypt cost ${cost} on ${keygate.config.hashWorkers} ` +
      `workers, pool ${keygate.config.dbPoolSize}`,
  );
  console.table(
    Object.fromEntries(
      Object.entries(results).map(([name, r]) => [
        name,
        {
          "logins/s": r.login.perSecond,
          "login p50": r.login.p50Ms,
          "login p99": r.login.p99Ms,
          "session checks/s": r.session.perSecond,
          "check p50": r.session.p50Ms,
          "check p99": r.session.p99Ms,
        },
      ]),
    ),
  );
  const chart: Ratio[] = [];
  for (const [name, r] of Object.entries(results)) {
    if (name === "Keygate") continue;
    const login = ratio(ours.login.perSecond, r.login.perSecond);
    const session = ratio(ours.session.perSecond, r.session.perSecond);
    console.log(`  Keygate / ${name}: logins x${login}, session checks x${session}`);
    chart.push(
      { label: "Keygate logins", value: login, reference: name },
      { label: "Keygate session checks", value: session, reference: name },
    );
  }
  return {
    ms,
    concurrency: n,
    users: emails.length,
    betterAuth: betterAuthVersion(),
    bcryptCost: cost,
    results,
    ratiosToSameHash: {
      login: ratio(ours.login.perSecond, peerSameHash.login.perSecond),
      session: ratio(ours.session.perSecond, peerSameHash.session.perSecond),
    },
    chart,
  };
}

function betterAuthVersion(): string {
  const manifest = path.resolve("node_modules/better-auth/package.json");
  return (JSON.parse(readFileSync(manifest, "utf8")) as { version: string }).version;
}

if (process.argv[2] === "client") await client();
else if (process.argv[2] === "better-auth") await betterAuthServer();
