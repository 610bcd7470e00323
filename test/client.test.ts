import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  Code,
  ConnectError,
  createKeygateClient,
  ErrorReason,
  errorReason,
  isKeygateError,
  type KeygateClient,
  type KeygateErrorReason,
  memoryTokenStore,
  OtpPurpose,
  Role,
  type StoredTokens,
} from "../src/client/index.js";
import { ManualClock } from "../src/clock.js";
import { sql } from "../src/db/sql.js";
import { failure } from "./support/failure.js";
import { uniqueEmail } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { codeIn, startSmtpServer } from "./support/smtp.js";

const clock = new ManualClock();
let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let workspaceId: string;
let adminKey: string;
const password = "correct horse battery staple";
let n = 0;

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate(
    {
      KEYGATE_SMTP_URL: smtp.url,
      // No grace: a second use of a rotated refresh token is caught as reuse at once.
      KEYGATE_REFRESH_GRACE_SECONDS: "0",
    },
    { clock },
  );
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  adminKey = keygate.bootstrapped?.adminKey as string;
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

const transports = [
  ["grpc", "2"],
  ["connect", "2"],
  ["connect", "1.1"],
  ["grpc-web", "2"],
  ["grpc-web", "1.1"],
] as const;

function client(options: Partial<Parameters<typeof createKeygateClient>[0]> = {}): KeygateClient {
  return createKeygateClient({
    baseUrl: keygate.url,
    transport: "connect",
    workspaceId,
    ...options,
  });
}

/** Signs up with the client (x-workspace-id from its options), verifies the code, logs in. */
async function signedIn(kg: KeygateClient, tag: string) {
  const email = uniqueEmail(tag);
  await kg.auth.signUp({ email, password });
  const code = codeIn(await smtp.waitFor((m) => m.to.includes(email)));
  await kg.auth.verifyEmail({ proof: { case: "code", value: { email, code } } });
  const res = await kg.auth.login({ email, password });
  expect(res.result.case).toBe("tokens");
  return email;
}

const countRow = z.object({ n: z.number() });
async function auditCount(type: string, sessionId: string) {
  const row = await keygate.database.pool.one(sql.type(countRow)`
    SELECT count(*)::int AS n FROM audit_events WHERE type = ${type} AND session_id = ${sessionId}`);
  return row.n;
}
async function stored(kg: KeygateClient): Promise<StoredTokens> {
  const tokens = await kg.tokens.get();
  if (!tokens) throw new Error("no session stored");
  return tokens;
}

describe.each(transports)("createKeygateClient over %s (HTTP/%s)", (transport, httpVersion) => {
  it("signs up in its workspace, keeps the tokens of Login and sends them", async () => {
    const kg = client({ transport, httpVersion });
    const email = await signedIn(kg, `${transport}-${httpVersion}`);
    const tokens = await stored(kg);
    expect(tokens.workspaceId).toBe(workspaceId);
    const me = await kg.auth.getSession({});
    expect(me.user?.email).toBe(email);
    expect(me.user?.emailVerified).toBe(true);
    expect(me.workspace?.id).toBe(workspaceId);
    expect(me.role).toBe(Role.MEMBER);
    expect(me.session?.id).toBe(tokens.sessionId);
  });

  it("refreshes once and retries when the server refuses an expired access token", async () => {
    // The client's clock is the real one; the server's is moved past the token's expiry.
    const kg = client({ transport, httpVersion });
    await signedIn(kg, "expired");
    const before = await stored(kg);
    clock.advance(16 * 60_000);
    const me = await kg.auth.getSession({});
    const after = await stored(kg);
    expect(me.session?.id).toBe(before.sessionId);
    expect(after.sessionId).toBe(before.sessionId);
    expect(after.refreshToken).not.toBe(before.refreshToken);
    expect(after.accessToken).not.toBe(before.accessToken);
    expect(await auditCount("refresh", before.sessionId)).toBe(1);
  });
});

describe("the session interceptor", () => {
  it("refreshes before the access token expires, by the client's clock", async () => {
    const kg = client({ now: () => clock.now().getTime(), refreshBeforeExpiryMs: 60_000 });
    await signedIn(kg, "early");
    const before = await stored(kg);
    // 50 s left: within the 60 s margin, though the server would still accept the token.
    clock.advance(before.accessTokenExpiresAt - clock.now().getTime() - 50_000);
    await kg.auth.listSessions({});
    const after = await stored(kg);
    expect(after.accessToken).not.toBe(before.accessToken);
    expect(await auditCount("refresh", before.sessionId)).toBe(1);
    // Fresh tokens are not refreshed again.
    await kg.auth.getSession({});
    expect((await stored(kg)).refreshToken).toBe(after.refreshToken);
    expect(await auditCount("refresh", before.sessionId)).toBe(1);
  });

  it("SECURITY.md 8, 10: parallel calls share one refresh; no rotated token is presented again", async () => {
    const kg = client({ transport: "grpc" });
    await signedIn(kg, "parallel");
    const before = await stored(kg);
    clock.advance(16 * 60_000);
    const calls = Array.from({ length: 12 }, (_, i) =>
      i % 3 === 0
        ? kg.auth.getSession({}).then((r) => r.session?.id)
        : i % 3 === 1
          ? kg.auth.listSessions({}).then((r) => r.sessions.find((s) => s.current)?.id)
          : kg.auth.listMyWorkspaces({}).then(() => before.sessionId),
    );
    expect(await Promise.all(calls)).toEqual(Array(12).fill(before.sessionId));
    expect(await auditCount("refresh", before.sessionId)).toBe(1);
    // With no grace window, a second use of the rotated token would have revoked the session.
    expect(await auditCount("refresh_reuse_detected", before.sessionId)).toBe(0);
    expect((await kg.auth.getSession({})).session?.id).toBe(before.sessionId);

    // The same with the refresh started by the client's own clock.
    const early = client({
      transport: "grpc",
      tokens: memoryTokenStore(await stored(kg)),
      now: () => clock.now().getTime() + 15 * 60_000,
    });
    await Promise.all(Array.from({ length: 8 }, () => early.auth.getSession({})));
    expect(await auditCount("refresh", before.sessionId)).toBe(2);
    expect(await auditCount("refresh_reuse_detected", before.sessionId)).toBe(0);
  });

  it("gives up after one refresh when the session has ended, and forgets it", async () => {
    const kg = client();
    await signedIn(kg, "ended");
    const tokens = await stored(kg);
    const admin = client({ adminKey });
    await admin.admin.revokeUserSessions({ userId: tokens.userId });
    clock.advance(16 * 60_000);
    const { error } = await failure(kg.auth.getSession({}));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(errorReason(error)).toBe("REFRESH_TOKEN_INVALID");
    expect(await kg.tokens.get()).toBeUndefined();
    // Signed out, public calls still work and signed-in ones say so.
    expect(errorReason((await failure(kg.auth.getSession({}))).error)).toBe("UNAUTHENTICATED");
  });

  it("forgets the session on Logout, after which its refresh token is dead", async () => {
    const kg = client();
    await signedIn(kg, "logout");
    const tokens = await stored(kg);
    await kg.auth.logout({});
    expect(await kg.tokens.get()).toBeUndefined();
    const again = client();
    const { error } = await failure(again.auth.refresh({ refreshToken: tokens.refreshToken }));
    expect(errorReason(error)).toBe("REFRESH_TOKEN_INVALID");
  });

  it("keeps tokens from the second login step and from SwitchWorkspace", async () => {
    const kg = client();
    const email = await signedIn(kg, "steps");
    const owner = await stored(kg);
    const admin = client({ adminKey });
    // Vouched for by the deployment, the account joins the second workspace as it is.
    await admin.admin.markEmailVerified({ userId: owner.userId });
    const other = await admin.admin.createWorkspace({ name: "Second", slug: `second-${++n}` });
    const otherId = other.workspace?.id as string;
    await admin.admin.addMember({ workspaceId: otherId, userId: owner.userId, role: Role.ADMIN });
    const switched = await kg.auth.switchWorkspace({ workspaceId: otherId });
    expect((await stored(kg)).workspaceId).toBe(otherId);
    expect((await stored(kg)).accessToken).toBe(switched.tokens?.accessToken);
    expect((await kg.auth.getSession({})).workspace?.id).toBe(otherId);
    // From here on the second workspace requires the emailed second step.
    await admin.admin.updateWorkspaceSettings({
      workspaceId: otherId,
      settings: { otpLogin: 3 },
    });

    const fresh = client({ workspaceId: otherId });
    const mailsBefore = smtp.received.filter((m) => m.to.includes(email)).length;
    const login = await fresh.auth.login({ email, password });
    expect(login.result.case).toBe("pendingLogin");
    expect(await fresh.tokens.get()).toBeUndefined();
    const pendingLoginId = (login.result.value as { pendingLoginId: string }).pendingLoginId;
    const mail = await smtp.waitFor(
      (m) =>
        m.to.includes(email) &&
        smtp.received.filter((r) => r.to.includes(email)).indexOf(m) >= mailsBefore,
    );
    await fresh.otp.verifyOtp({
      purpose: OtpPurpose.LOGIN_SECOND_STEP,
      pendingLoginId,
      code: codeIn(mail),
    });
    expect((await stored(fresh)).workspaceId).toBe(otherId);
    expect((await fresh.auth.getSession({})).role).toBe(Role.ADMIN);
  });

  it("sends an admin key instead of any session, and never stores tokens", async () => {
    const withKey = client({ adminKey });
    const page = await withKey.admin.listWorkspaces({});
    expect(page.workspaces.map((w) => w.id)).toContain(workspaceId);
    const without = client();
    const { error } = await failure(without.admin.listWorkspaces({}));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(errorReason(error)).toBe("UNAUTHENTICATED");
  });
});

describe("errors", () => {
  it("surface as ConnectError with a typed reason", async () => {
    const kg = client();
    const { error } = await failure(
      kg.auth.login({ email: uniqueEmail("nobody"), password: "not the password at all" }),
    );
    expect(error).toBeInstanceOf(ConnectError);
    expect(error.code).toBe(Code.Unauthenticated);
    const reason: KeygateErrorReason | undefined = errorReason(error);
    expect(reason).toBe("INVALID_CREDENTIALS");
    expect(ErrorReason[reason as KeygateErrorReason]).toBe(ErrorReason.INVALID_CREDENTIALS);
    expect(isKeygateError(error, "INVALID_CREDENTIALS", "ACCOUNT_LOCKED")).toBe(true);
    expect(isKeygateError(error, "RATE_LIMITED")).toBe(false);
    expect(errorReason(new Error("not from Keygate"))).toBeUndefined();
  });
});
