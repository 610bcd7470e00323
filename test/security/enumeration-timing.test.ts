import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { OtpService } from "../../gen/keygate/v1/otp_service_pb.js";
import { OtpPurpose, Role } from "../../gen/keygate/v1/types_pb.js";
import { emailFlowFloorMs } from "../../src/domain/public-flow.js";
import { startTestKeygate, type TestKeygate } from "../support/server.js";
import { startSmtpServer } from "../support/smtp.js";

// SECURITY.md 17, timing: interleaved samples of known and unknown addresses for each public
// flow. The machine is shared, so the assertion is deliberately loose (a difference of medians
// within the spread of the samples); the figures are printed for docs/security-testing.md.

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let workspaceId: string;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let otp: ReturnType<typeof createClient<typeof OtpService>>;
const known: string[] = [];
/** Known addresses that have not proven themselves yet: verification flows do real work for them. */
const unverified: string[] = [];
const password = "correct horse battery staple";
const samples = 24;
let counter = 0;
const fresh = () => `nobody-${Date.now()}-${++counter}@example.test`;

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({
    KEYGATE_SMTP_URL: smtp.url,
    KEYGATE_WORKSPACE_DEFAULTS: JSON.stringify({ passwordless_otp: true }),
  });
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  auth = createClient(AuthService, transport);
  otp = createClient(OtpService, transport);
  const admin = createClient(AdminService, transport);
  for (let i = 0; i < 4; i++) {
    const email = `known-${i}-${Date.now()}@example.test`;
    await admin.provisionUser(
      { email, password, workspaceId, role: Role.MEMBER, emailVerified: true },
      { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } },
    );
    known.push(email);
    const pending = `unverified-${i}-${Date.now()}@example.test`;
    await admin.provisionUser(
      { email: pending, password, workspaceId, role: Role.MEMBER, emailVerified: false },
      { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } },
    );
    unverified.push(pending);
  }
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

const median = (xs: number[]) => quantile(xs, 0.5);
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return (s[lo] as number) + ((s[hi] as number) - (s[lo] as number)) * (pos - lo);
}
const iqr = (xs: number[]) => quantile(xs, 0.75) - quantile(xs, 0.25);

/** Mann-Whitney U as a z-score (normal approximation, ties averaged). */
function mannWhitneyZ(a: number[], b: number[]): number {
  const all = [...a.map((v) => ({ v, g: 0 })), ...b.map((v) => ({ v, g: 1 }))].sort(
    (x, y) => x.v - y.v,
  );
  const ranks = new Array<number>(all.length);
  for (let i = 0; i < all.length; ) {
    let j = i;
    while (j + 1 < all.length && all[j + 1]?.v === all[i]?.v) j++;
    for (let k = i; k <= j; k++) ranks[k] = (i + j) / 2 + 1;
    i = j + 1;
  }
  const rankA = all.reduce((sum, x, i) => sum + (x.g === 0 ? (ranks[i] as number) : 0), 0);
  const u = rankA - (a.length * (a.length + 1)) / 2;
  const mean = (a.length * b.length) / 2;
  const sd = Math.sqrt((a.length * b.length * (a.length + b.length + 1)) / 12);
  return (u - mean) / sd;
}

type Flow = (email: string) => Promise<unknown>;
interface FlowOptions {
  /** Which known addresses to use (verified ones by default). */
  readonly known?: "verified" | "unverified";
  /** The flow answers no sooner than the floor of src/domain/public-flow.ts. */
  readonly floored?: boolean;
}
/** Never a valid code (codes are six digits), so a known address gets a wrong-code answer. */
const wrongCode = "0000000";
const flows: [string, Flow, FlowOptions?][] = [
  [
    "SignUp",
    (email) => auth.signUp({ email, password }, { headers: { "x-workspace-id": workspaceId } }),
  ],
  [
    "Login (wrong password)",
    (email) => auth.login({ email, password: "not the password at all", workspaceId }),
  ],
  [
    "RequestPasswordReset",
    (email) => auth.requestPasswordReset({ email, workspaceId }),
    { floored: true },
  ],
  [
    "SendOtp (passwordless)",
    (email) => otp.sendOtp({ email, workspaceId, purpose: OtpPurpose.PASSWORDLESS_SIGN_IN }),
    { floored: true },
  ],
  ["RequestMagicLink", (email) => auth.requestMagicLink({ email, workspaceId }), { floored: true }],
  [
    "SendEmailVerification",
    (email) => auth.sendEmailVerification({ email, workspaceId }),
    { known: "unverified", floored: true },
  ],
  [
    "VerifyOtp (email verification, wrong code)",
    (email) =>
      otp.verifyOtp({
        email,
        workspaceId,
        purpose: OtpPurpose.EMAIL_VERIFICATION,
        code: wrongCode,
      }),
    { known: "unverified", floored: true },
  ],
  [
    "VerifyOtp (passwordless, wrong code)",
    (email) =>
      otp.verifyOtp({
        email,
        workspaceId,
        purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
        code: wrongCode,
      }),
    { floored: true },
  ],
  [
    "VerifyEmail (wrong code)",
    (email) =>
      auth.verifyEmail({ proof: { case: "code", value: { email, code: wrongCode, workspaceId } } }),
    { known: "unverified", floored: true },
  ],
];

const figures: string[] = [];

describe("SECURITY.md 17: known and unknown addresses take the same time on every public flow", () => {
  for (const [name, flow, options = {}] of flows) {
    const addresses = options.known === "unverified" ? unverified : known;
    it(name, { timeout: 120_000 }, async () => {
      const times = { known: [] as number[], unknown: [] as number[] };
      const codes = { known: new Set<string>(), unknown: new Set<string>() };
      // A warm-up pair, then known and unknown alternating, the order within a pair random.
      await flow(addresses[0] as string).catch(() => {});
      await flow(fresh()).catch(() => {});
      for (let i = 0; i < samples; i++) {
        const pair: ("known" | "unknown")[] =
          Math.random() < 0.5 ? ["known", "unknown"] : ["unknown", "known"];
        for (const kind of pair) {
          const email = kind === "known" ? (addresses[i % addresses.length] as string) : fresh();
          const started = performance.now();
          const code = await flow(email).then(
            () => "OK",
            (e) => Code[ConnectError.from(e).code] as string,
          );
          times[kind].push(performance.now() - started);
          codes[kind].add(code);
        }
      }
      expect([...codes.known]).toEqual([...codes.unknown]);
      const mk = median(times.known);
      const mu = median(times.unknown);
      const spread = Math.max(iqr(times.known), iqr(times.unknown));
      const z = mannWhitneyZ(times.known, times.unknown);
      const row = `| ${name} | ${mk.toFixed(1)} | ${mu.toFixed(1)} | ${(mk - mu).toFixed(1)} | ${spread.toFixed(1)} | ${z.toFixed(2)} |`;
      figures.push(row);
      console.log(`SECURITY.md 17 timing (ms, ${samples}+${samples} samples): ${row}`);
      // A flow that skipped the password hash or sent mail on the request path for one kind
      // only would differ by tens of milliseconds with a narrow spread.
      expect(Math.abs(mk - mu)).toBeLessThanOrEqual(
        Math.max(2 * spread, 0.25 * Math.max(mk, mu)) + 3,
      );
      if (options.floored) {
        // The floor is a sleep, so no answer can come sooner, however loaded the machine (1 ms
        // of slack for timers, which count in whole milliseconds). An unknown address answered
        // at once would show up here first.
        const fastest = Math.min(...times.known, ...times.unknown);
        expect(fastest).toBeGreaterThanOrEqual(emailFlowFloorMs - 1);
      }
    });
  }

  afterAll(() => {
    console.log(
      [
        "| Flow | known median | unknown median | difference | larger IQR | Mann-Whitney z |",
        "|---|---|---|---|---|---|",
        ...figures,
      ].join("\n"),
    );
  });
});
