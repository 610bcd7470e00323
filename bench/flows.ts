/**
 * Operations per second of the emailed flows, end to end: SignUp; OtpService.SendOtp then
 * VerifyOtp with the code from the mail (purpose SENSITIVE_ACTION, by signed-in users);
 * RequestMagicLink then ConsumeMagicLink with the token from the mail. The load generator runs
 * the SMTP server that Keygate delivers to (test/support/smtp.ts), so each client reads its own
 * mail as a user would; a round trip includes the outbox's delivery.
 *
 *   npm run bench -- signup|otp|magic-link [ms=5000] [in flight=8]
 */
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OtpService } from "../gen/keygate/v1/otp_service_pb.js";
import { OtpPurpose, Role } from "../gen/keygate/v1/types_pb.js";
import { codeIn, linkIn, type ReceivedMail, startSmtpServer } from "../test/support/smtp.js";
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

export type Flow = "signup" | "otp" | "magic-link";

interface Job {
  flow: Flow;
  url: string;
  workspaceId: string;
  /** Per worker: the address it signs in with (otp, magic-link). */
  emails: string[];
  /** Per worker: an access token (otp). */
  accessTokens: string[];
  ms: number;
}

interface Figures {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  operations: number;
}

// ---- the load-generator child, with the SMTP server ----

async function client(): Promise<void> {
  const smtp = await startSmtpServer();
  const taken = new Set<ReceivedMail>();
  /** The next message to `address` not read yet. */
  const nextMail = async (address: string) => {
    const mail = await smtp.waitFor((m) => m.to.includes(address) && !taken.has(m), 30_000);
    taken.add(mail);
    return mail;
  };
  let counter = 0;
  const drive = async (job: Job): Promise<Figures> => {
    const transport = createConnectTransport({ baseUrl: job.url, httpVersion: "2" });
    const auth = createClient(AuthService, transport);
    const otp = createClient(OtpService, transport);
    const ws = { headers: { "x-workspace-id": job.workspaceId } };
    const ops = job.emails.map((email, i) => {
      const me = { headers: { authorization: `Bearer ${job.accessTokens[i] ?? ""}` } };
      if (job.flow === "signup") {
        return async () => {
          await auth.signUp(
            { email: `signup-${process.pid}-${++counter}@example.test`, password },
            ws,
          );
        };
      }
      if (job.flow === "otp") {
        return async () => {
          await otp.sendOtp({ purpose: OtpPurpose.SENSITIVE_ACTION }, me);
          const code = codeIn(await nextMail(email));
          const res = await otp.verifyOtp({ purpose: OtpPurpose.SENSITIVE_ACTION, code }, me);
          if (res.result.case !== "actionProof")
            throw new Error("VerifyOtp answered no action proof");
        };
      }
      return async () => {
        await auth.requestMagicLink({ email, workspaceId: job.workspaceId });
        const { token } = linkIn(await nextMail(email));
        const res = await auth.consumeMagicLink({ token });
        if (!res.tokens) throw new Error("ConsumeMagicLink answered no tokens");
      };
    });
    // Each worker runs the flow of its own address only: a second code or link for the same
    // address would replace the first.
    const latencies: number[] = [];
    const started = performance.now();
    const deadline = started + job.ms;
    await Promise.all(
      ops.map(async (op) => {
        while (performance.now() < deadline) {
          const t = performance.now();
          await op();
          latencies.push(performance.now() - t);
        }
      }),
    );
    latencies.sort((a, b) => a - b);
    const run = { perSecond: latencies.length / ((performance.now() - started) / 1000), latencies };
    return {
      perSecond: round(run.perSecond, 1),
      p50Ms: round(quantile(run.latencies, 0.5), 3),
      p99Ms: round(quantile(run.latencies, 0.99), 3),
      operations: run.latencies.length,
    };
  };
  serveJobs(drive, {
    ready: { smtpUrl: smtp.url },
    onDisconnect: () => {
      smtp.stop().finally(() => process.exit(0));
    },
  });
}

// ---- the benchmark ----

const described: Record<Flow, string> = {
  signup: "SignUp (answered; the verification mail is delivered in the background)",
  otp: "SendOtp + VerifyOtp with the mailed code (SENSITIVE_ACTION)",
  "magic-link": "RequestMagicLink + ConsumeMagicLink with the mailed token",
};

export async function runFlow(flow: Flow, args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 5_000);
  const inFlight = Number(args[1] ?? 8);
  const generator = await loadGenerator(self);
  const { smtpUrl } = generator.ready as { smtpUrl: string };
  const keygate = await startBenchKeygate({ KEYGATE_SMTP_URL: smtpUrl });
  try {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const admin = createClient(AdminService, transport);
    const auth = createClient(AuthService, transport);
    const root = { headers: { authorization: `Bearer ${keygate.rootKey}` } };
    const workspaceId = keygate.workspaceId;
    // One signed-in user per flow in flight, so that no two flows wait for the same mailbox.
    const emails = Array.from({ length: inFlight }, (_, i) => `${flow}-${i}@example.test`);
    const accessTokens: string[] = [];
    for (const email of emails) {
      await admin.provisionUser(
        { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
        root,
      );
      if (flow === "otp") {
        const res = await auth.login({ email, password, workspaceId });
        if (res.result.case !== "tokens") throw new Error("login did not answer tokens");
        accessTokens.push(res.result.value.accessToken);
      }
    }
    const f = await generator.ask<Figures>({
      flow,
      url: keygate.url,
      workspaceId,
      emails,
      accessTokens,
      ms,
    });
    console.log(
      `\n${flow}: ${described[flow]}, over Connect (HTTP/2) from a separate process that also ` +
        `runs the SMTP server, ${inFlight} in flight for ${ms} ms (${benchDatabase()}, bcrypt ` +
        `cost ${keygate.config.bcryptCost})`,
    );
    console.table({ [flow]: { "per second": f.perSecond, p50: f.p50Ms, p99: f.p99Ms } });
    return { ms, inFlight, database: benchDatabase(), ...f };
  } finally {
    generator.child.disconnect();
    await keygate.stop();
  }
}

if (process.argv[2] === "client") await client();
