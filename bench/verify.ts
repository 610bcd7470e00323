/**
 * keygate/verify against its physical limit, in one run:
 * - throughput: Verifier.verify of one access token against raw jose jwtVerify of the same
 *   token with the same public key, same concurrency (target: at least 0.9x);
 * - revocation latency: the time from a Logout call's answer to the first refusal by a
 *   verifier running in another process (test/fixtures/internal-service.ts), polled every
 *   5 ms, over many revocations (target: p99 under 1 s).
 *
 *   npm run bench -- verify [ms per measurement=2000] [revocations=200] [concurrency=16]
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { importJWK, type JWK, jwtVerify } from "jose";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { AdminKeyRole } from "../gen/keygate/v1/types_pb.js";
import { createVerifier } from "../src/verify/index.js";
import { type Ratio, startBenchKeygate } from "./support.js";

const password = "correct horse battery staple";

async function rate(ms: number, concurrency: number, op: () => Promise<unknown>) {
  const end = performance.now() + ms;
  let done = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await op();
        done++;
      }
    }),
  );
  return Math.round(done / (ms / 1000));
}

const percentile = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 2_000);
  const revocations = Number(args[1] ?? 200);
  const concurrency = Number(args[2] ?? 16);
  const keygate = await startBenchKeygate();
  let child: ChildProcess | undefined;
  try {
    const rootKey = keygate.rootKey;
    const workspaceId = keygate.workspaceId;
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const auth = createClient(AuthService, transport);
    const root = { headers: { authorization: `Bearer ${rootKey}` } };
    const { secret } = await admin.createAdminKey(
      { name: "bench", role: AdminKeyRole.READ_ONLY, introspect: true },
      root,
    );
    const email = `bench-${Date.now()}@example.test`;
    await admin.provisionUser({ email, password, workspaceId }, root);
    const login = async () => {
      const res = await auth.login({ email, password, workspaceId });
      if (res.result.case !== "tokens") throw new Error("no tokens");
      return res.result.value;
    };

    // Throughput, in this process.
    const verifier = createVerifier({
      baseUrl: keygate.url,
      adminKey: secret,
      audience: keygate.config.audience,
      issuer: keygate.config.issuer,
    });
    await verifier.ready();
    const token = (await login()).accessToken;
    await verifier.verify(token);
    const jwks = (await (await fetch(`${keygate.url}/.well-known/jwks.json`)).json()) as {
      keys: (JWK & { kid: string; alg: string })[];
    };
    const kid = JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString()).kid;
    const jwk = jwks.keys.find((k) => k.kid === kid) as JWK & { alg: string };
    const key = await importJWK(jwk, jwk.alg);
    const raw = () =>
      jwtVerify(token, key, {
        issuer: keygate.config.issuer,
        audience: keygate.config.audience,
        algorithms: [jwk.alg],
        typ: "at+jwt",
      });
    const rounds = { raw: [] as number[], verifier: [] as number[] };
    for (let r = 0; r < 3; r++) {
      rounds.raw.push(await rate(ms, concurrency, raw));
      rounds.verifier.push(await rate(ms, concurrency, () => verifier.verify(token)));
    }
    await verifier.close();
    const median = (xs: number[]) => percentile(xs, 50);
    const rawRate = median(rounds.raw);
    const verifierRate = median(rounds.verifier);

    // Revocation to refusal, in another process.
    child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        path.resolve(import.meta.dirname, "../test/fixtures/internal-service.ts"),
      ],
      {
        env: {
          ...process.env,
          KEYGATE_URL: keygate.url,
          KEYGATE_ADMIN_KEY: secret,
          KEYGATE_AUDIENCE: keygate.config.audience,
          KEYGATE_ISSUER: keygate.config.issuer,
        },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    const ports = await new Promise<{ rpc: number }>((resolve) => {
      let out = "";
      child?.stdout?.on("data", (c: Buffer) => {
        out += c.toString();
        if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0] ?? "{}"));
      });
    });
    const service = createClient(
      AuthService,
      createConnectTransport({ baseUrl: `http://127.0.0.1:${ports.rpc}`, httpVersion: "2" }),
    );
    const latencies: number[] = [];
    for (let i = 0; i < revocations; i++) {
      const t = await login();
      const as = { headers: { authorization: `Bearer ${t.accessToken}` } };
      await service.getSession({}, as);
      await auth.logout({}, as);
      const started = performance.now();
      for (;;) {
        const refused = await service.getSession({}, as).then(
          () => false,
          () => true,
        );
        if (refused) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      latencies.push(performance.now() - started);
    }

    const figures = {
      rawVerifyPerSecond: rawRate,
      verifierPerSecond: verifierRate,
      ratio: Number((verifierRate / rawRate).toFixed(2)),
      revocationToRefusalMs: {
        p50: Number(percentile(latencies, 50).toFixed(1)),
        p99: Number(percentile(latencies, 99).toFixed(1)),
        max: Number(Math.max(...latencies).toFixed(1)),
        samples: latencies.length,
      },
      database: process.env.DATABASE_URL ? "postgresql" : "embedded",
    };
    const targets = {
      "Verifier.verify >= 0.9x raw jose jwtVerify": figures.ratio >= 0.9,
      "revocation to refusal p99 < 1 s": figures.revocationToRefusalMs.p99 < 1000,
    };
    const chart: Ratio[] = [
      {
        label: "keygate/verify",
        value: figures.ratio,
        reference: "jose jwtVerify",
        target: { atLeast: 0.9 },
      },
    ];
    const met = (ok: boolean) => (ok ? "met" : "NOT MET");
    console.log(`
keygate/verify (${figures.database} database, concurrency ${concurrency}, medians of 3 rounds)
| measure | figure | target |
|---|---|---|
| raw jose jwtVerify | ${rawRate.toLocaleString("en")}/s | |
| Verifier.verify | ${verifierRate.toLocaleString("en")}/s | ratio ${figures.ratio} (≥ 0.9: ${met(figures.ratio >= 0.9)}) |
| revocation → refusal p50 | ${figures.revocationToRefusalMs.p50} ms | |
| revocation → refusal p99 | ${figures.revocationToRefusalMs.p99} ms | < 1000 ms: ${met(figures.revocationToRefusalMs.p99 < 1000)} |
`);
    return { ...figures, targets, chart };
  } finally {
    child?.kill("SIGTERM");
    await keygate.stop();
  }
}
