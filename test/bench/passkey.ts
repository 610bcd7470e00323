/**
 * Passkey sign-ins per second: BeginPasskeyAuthentication + FinishPasskeyAuthentication
 * (PASSKEY_SIGN_IN, username-less), end to end over Connect, from a load generator in a
 * separate process holding a software authenticator (test/support/soft-authenticator.ts:
 * ES256). Each sign-in stores and spends a challenge, verifies the assertion, moves the
 * credential's counter and opens a session with signed tokens.
 *
 *   npm run bench -- passkey [ms=5000] [in flight=8]
 */
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { FactorPurpose, FactorService } from "../../gen/keygate/v1/factor_service_pb.js";
import { Role } from "../../gen/keygate/v1/types_pb.js";
import { SoftAuthenticator } from "../support/soft-authenticator.js";
import {
  benchDatabase,
  loadGenerator,
  quantile,
  round,
  serveJobs,
  startBenchKeygate,
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
  const generator = await loadGenerator(self);
  const keygate = await startBenchKeygate({
    KEYGATE_WEBAUTHN_RP_ID: rpId,
    KEYGATE_WEBAUTHN_ORIGINS: origin,
  });
  try {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const workspaceId = keygate.workspaceId;
    const emails = Array.from({ length: inFlight }, (_, i) => `passkey-${i}@example.test`);
    for (const email of emails) {
      await admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
    }
    const f = await generator.ask<Figures>({ url: keygate.url, workspaceId, emails, ms });
    console.log(
      `\npasskey: BeginPasskeyAuthentication + FinishPasskeyAuthentication (PASSKEY_SIGN_IN, ` +
        `ES256 software authenticator) over Connect (HTTP/2) from a separate process, ` +
        `${inFlight} in flight for ${ms} ms (${benchDatabase()})`,
    );
    console.table({ "passkey sign-in": { "per second": f.perSecond, p50: f.p50Ms, p99: f.p99Ms } });
    return { ms, inFlight, database: benchDatabase(), ...f };
  } finally {
    generator.child.disconnect();
    await keygate.stop();
  }
}

if (process.argv[2] === "client") await client();
