/**
 * Passkey sign-ins per second: BeginPasskeyAuthentication + FinishPasskeyAuthentication
 * (PASSKEY_SIGN_IN, username-less), end to end over Connect, from a load generator in a
 * separate process holding a software authenticator (test/support/soft-authenticator.ts:
 * ES256). Each sign-in stores and spends a challenge, verifies the assertion, moves the
 * credential's counter and opens a session with signed tokens. Meanwhile Introspect calls
 * arrive over gRPC at a steady rate from h2load (open loop, the serving-path method), and
 * their latency is compared with the same calls alone: sign-ins must not slow the serving
 * path.
 *
 * Targets (the passkey issue: the cheapest login Keygate offers): ≥ 300 sign-ins/s on the
 * machine's two cores, and Introspect's p99 during the sign-ins unchanged: within 1 ms of its
 * p99 alone.
 *
 *   npm run bench -- passkey [ms=5000] [in flight=8] [introspect/s=100; 0: sign-ins alone]
 */
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { FactorPurpose, FactorService } from "../gen/keygate/v1/factor_service_pb.js";
import {
  IntrospectRequestSchema,
  TokenIntrospectionService,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import { Role } from "../gen/keygate/v1/types_pb.js";
import { SoftAuthenticator } from "../test/support/soft-authenticator.js";
import { ensureCGenerators, grpcFrame, h2load } from "./c-load.js";
import {
  benchDatabase,
  benchGateway,
  loadGenerator,
  quantile,
  type Ratio,
  round,
  serveJobs,
  startBenchKeygate,
  verdict,
} from "./support.js";

const self = fileURLToPath(import.meta.url);
const password = "correct horse battery staple";
const rpId = "bench.example.test";
const origin = `https://${rpId}`;

interface Job {
  url: string;
  workspaceId: string;
  emails: string[];
  ms: number;
}

interface Figures {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  operations: number;
}

// ---- the load-generator child: registers one passkey per worker, then signs in with it ----

async function client(): Promise<void> {
  const drive = async (job: Job): Promise<Figures> => {
    const transport = createConnectTransport({ baseUrl: job.url, httpVersion: "2" });
    const auth = createClient(AuthService, transport);
    const factors = createClient(FactorService, transport);
    const devices = await Promise.all(
      job.emails.map(async (email) => {
        const res = await auth.login({ email, password, workspaceId: job.workspaceId });
        if (res.result.case !== "tokens") throw new Error("login did not answer tokens");
        const me = { headers: { authorization: `Bearer ${res.result.value.accessToken}` } };
        const device = new SoftAuthenticator(origin);
        const begin = await factors.beginPasskeyRegistration({}, me);
        await factors.finishPasskeyRegistration(
          { credential: device.register(begin.options as never).json as never },
          me,
        );
        return device;
      }),
    );
    const signIn = async (device: SoftAuthenticator) => {
      const begin = await factors.beginPasskeyAuthentication({
        purpose: FactorPurpose.PASSKEY_SIGN_IN,
        workspaceId: job.workspaceId,
      });
      const res = await factors.finishPasskeyAuthentication({
        purpose: FactorPurpose.PASSKEY_SIGN_IN,
        workspaceId: job.workspaceId,
        credential: device.assert(begin.options as never) as never,
      });
      if (res.result.case !== "tokens") throw new Error("the sign-in answered no tokens");
    };
    const latencies: number[] = [];
    const started = performance.now();
    const deadline = started + job.ms;
    await Promise.all(
      devices.map(async (device) => {
        while (performance.now() < deadline) {
          const t = performance.now();
          await signIn(device);
          latencies.push(performance.now() - t);
        }
      }),
    );
    latencies.sort((a, b) => a - b);
    return {
      perSecond: round(latencies.length / ((performance.now() - started) / 1000), 1),
      p50Ms: round(quantile(latencies, 0.5), 3),
      p99Ms: round(quantile(latencies, 0.99), 3),
      operations: latencies.length,
    };
  };
  serveJobs(drive);
}

// ---- the benchmark ----

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 5_000);
  const inFlight = Number(args[1] ?? 8);
  const introspectRate = Number(args[2] ?? 100);
  ensureCGenerators();
  const generator = await loadGenerator(self);
  const keygate = await startBenchKeygate({
    KEYGATE_WEBAUTHN_RP_ID: rpId,
    KEYGATE_WEBAUTHN_ORIGINS: origin,
  });
  try {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const _auth = createClient(AuthService, transport);
    const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const workspaceId = keygate.workspaceId;
    const emails = Array.from({ length: inFlight }, (_, i) => `passkey-${i}@example.test`);
    for (const email of emails) {
      await admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
    }
    const { key, token } = await benchGateway(keygate);
    const introspect = {
      url: `${keygate.url}/${TokenIntrospectionService.typeName}/Introspect`,
      headers: {
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${key}`,
      },
      body: grpcFrame(
        toBinary(IntrospectRequestSchema, create(IntrospectRequestSchema, { token })),
      ),
    };
    const probe = async () => {
      const c = await h2load(introspect, ms, { rate: introspectRate });
      if (c.failed > 0) throw new Error(`${c.failed} Introspect calls failed`);
      return {
        perSecond: round(c.perSecond, 1),
        p50Ms: round(c.p50Ms, 3),
        p99Ms: round(c.p99Ms, 3),
      };
    };
    // introspect/s 0: the sign-ins alone, nothing beside them.
    const idle = { perSecond: 0, p50Ms: 0, p99Ms: 0 };
    const alone = introspectRate > 0 ? await probe() : idle;
    const [f, during] = await Promise.all([
      generator.ask<Figures>({ url: keygate.url, workspaceId, emails, ms }),
      introspectRate > 0 ? probe() : idle,
    ]);
    console.log(
      `\npasskey: BeginPasskeyAuthentication + FinishPasskeyAuthentication (PASSKEY_SIGN_IN, ` +
        `ES256 software authenticator) over Connect (HTTP/2) from a separate process, ` +
        `${inFlight} in flight for ${ms} ms (${benchDatabase()}); Introspect over gRPC at ` +
        `${introspectRate}/s from h2load (open loop), alone and during the sign-ins`,
    );
    console.table({
      "passkey sign-in": { "per second": f.perSecond, p50: f.p50Ms, p99: f.p99Ms },
      "Introspect alone": { "per second": alone.perSecond, p50: alone.p50Ms, p99: alone.p99Ms },
      "Introspect during sign-ins": {
        "per second": during.perSecond,
        p50: during.p50Ms,
        p99: during.p99Ms,
      },
    });
    const targets = {
      "passkey sign-ins/s >= 300": { figure: `${f.perSecond}/s`, met: f.perSecond >= 300 },
      // Judged only when Introspect ran beside the sign-ins.
      ...(introspectRate > 0
        ? {
            "Introspect p99 during passkey sign-ins within 1 ms of alone": {
              figure: `${during.p99Ms} ms (alone ${alone.p99Ms} ms)`,
              met: during.p99Ms <= alone.p99Ms + 1,
            },
          }
        : {}),
    };
    for (const [t, c] of Object.entries(targets)) {
      console.log(`  ${verdict(c.met).padEnd(7)} ${t}: ${c.figure}`);
    }
    return {
      ms,
      inFlight,
      introspectRate,
      database: benchDatabase(),
      ...f,
      introspectAlone: alone,
      introspectDuringSignIns: during,
      targets: Object.fromEntries(Object.entries(targets).map(([t, c]) => [t, c.met])),
      chart: [
        {
          label: "Passkey sign-ins",
          value: round(f.perSecond / 300, 3),
          reference: "300 sign-ins/s",
          target: { atLeast: 1 },
        },
      ] satisfies Ratio[],
    };
  } finally {
    generator.child.disconnect();
    await keygate.stop();
  }
}

if (process.argv[2] === "client") await client();
