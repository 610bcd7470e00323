import { createServer, type Server } from "node:http";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { decodeJwt } from "jose";
import { Secret, TOTP } from "otpauth";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { FactorPurpose, FactorService } from "../gen/keygate/v1/factor_service_pb.js";
import { OtpService } from "../gen/keygate/v1/otp_service_pb.js";
import {
  TokenIntrospectionService,
  TokenTypeHint,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import {
  AdminKeyRole,
  FactorType,
  MfaMode,
  OtpLoginMode,
  OtpPurpose,
  Role,
  type Tokens,
} from "../gen/keygate/v1/types_pb.js";
import { builtInRateLimits } from "../src/config.js";
import { createVerifier, keygateMiddleware, VerifyError } from "../src/verify/index.js";
import { failure } from "./support/failure.js";
import { bearer } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { codeIn, linkIn, startSmtpServer } from "./support/smtp.js";

// How a session was signed in (amr, acr), carried into every answer that describes a token,
// and the workspace rules that read it: mfa, mfa_required_roles, passwordless_only.
let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let adminKey: string;
const transport = () => createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let otp: ReturnType<typeof createClient<typeof OtpService>>;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let introspection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;

const password = "correct horse battery staple";
let n = 0;
const address = (tag: string) => `${tag}-${++n}-${Date.now().toString(36)}@example.test`;
const asAdmin = () => ({ headers: { authorization: `Bearer ${adminKey}` } });

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({
    KEYGATE_SMTP_URL: smtp.url,
    // The deployment's default lockout, which the test servers otherwise lift.
    KEYGATE_LOCKOUT_THRESHOLD: "5",
    KEYGATE_RATE_LIMITS: JSON.stringify({
      ...builtInRateLimits,
      signup_ip: { limit: 1000, window_seconds: 3600 },
      login_ip: { limit: 1000, window_seconds: 3600 },
      code_verify_ip: { limit: 1000, window_seconds: 3600 },
      deployment_ip: { limit: 10000, window_seconds: 3600 },
    }),
  });
  adminKey = keygate.bootstrapped?.adminKey as string;
  auth = createClient(AuthService, transport());
  otp = createClient(OtpService, transport());
  admin = createClient(AdminService, transport());
  introspection = createClient(TokenIntrospectionService, transport());
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

async function workspace(settings: Record<string, unknown> = {}) {
  const res = await admin.createWorkspace(
    { name: "Methods", slug: `methods-${++n}-${Date.now().toString(36)}`, settings },
    asAdmin(),
  );
  return res.workspace?.id as string;
}

/** A new account, signed up into `workspaceId` with its address verified. */
async function account(workspaceId: string, tag = "member") {
  const email = address(tag);
  await auth.signUp({ email, password }, { headers: { "x-workspace-id": workspaceId } });
  const users = await admin.listUsers({ workspaceId }, asAdmin());
  const user = users.users.find((u) => u.email === email);
  await admin.markEmailVerified({ userId: user?.id as string }, asAdmin());
  return { email, userId: user?.id as string };
}

async function login(email: string, workspaceId: string): Promise<Tokens> {
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error(`expected tokens, got ${res.result.case}`);
  return res.result.value;
}

describe("amr and acr say how a session was signed in", () => {
  it("a password login is amr pwd, acr 1, in the answer, the token, GetSession, refresh and introspection", async () => {
    const ws = await workspace();
    const { email } = await account(ws);
    const tokens = await login(email, ws);
    expect([tokens.amr, tokens.acr]).toEqual([["pwd"], "1"]);
    const claims = decodeJwt(tokens.accessToken);
    expect([claims.amr, claims.acr]).toEqual([["pwd"], "1"]);
    const me = await auth.getSession({}, bearer(tokens.accessToken));
    expect(me.session?.amr).toEqual(["pwd"]);

    const rotated = await auth.refresh({ refreshToken: tokens.refreshToken });
    expect(rotated.tokens?.amr).toEqual(["pwd"]);
    expect(decodeJwt(rotated.tokens?.accessToken as string).amr).toEqual(["pwd"]);

    const access = await introspection.introspect({ token: tokens.accessToken }, asAdmin());
    expect([access.active, access.amr, access.acr]).toEqual([true, ["pwd"], "1"]);
    const refresh = await introspection.introspect(
      { token: rotated.tokens?.refreshToken as string, tokenTypeHint: TokenTypeHint.REFRESH_TOKEN },
      asAdmin(),
    );
    expect([refresh.active, refresh.amr, refresh.acr]).toEqual([true, ["pwd"], "1"]);

    const rfc7662 = await fetch(`${keygate.url}/oauth2/introspect`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${adminKey}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams({ token: tokens.accessToken }).toString(),
    });
    const body = (await rfc7662.json()) as Record<string, unknown>;
    expect([body.active, body.amr, body.acr]).toEqual([true, ["pwd"], "1"]);
  });

  it("a magic link is amr email; password and an emailed code stay one factor", async () => {
    const ws = await workspace({ otpLogin: OtpLoginMode.REQUIRED });
    const { email } = await account(ws);
    await auth.requestMagicLink({ email, workspaceId: ws });
    const link = linkIn(
      await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("magic-link")),
    );
    const magic = await auth.consumeMagicLink({ token: link.token });
    // The link is itself an emailed factor: no emailed second step follows it.
    expect([magic.tokens?.amr, magic.tokens?.acr, magic.pendingLogin]).toEqual([
      ["email"],
      "1",
      undefined,
    ]);

    const res = await auth.login({ email, password, workspaceId: ws });
    expect(res.result.case).toBe("pendingLogin");
    const pending = res.result.value as { pendingLoginId: string; factors: number[] };
    const code = codeIn(
      await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("sign-in code")),
    );
    const done = await otp.verifyOtp({
      purpose: OtpPurpose.LOGIN_SECOND_STEP,
      pendingLoginId: pending.pendingLoginId,
      code,
    });
    expect(done.result.case).toBe("tokens");
    const tokens = done.result.value as Tokens;
    // Whoever reads the mailbox can also reset the password: not two factors.
    expect([tokens.amr, tokens.acr]).toEqual([["pwd", "email"], "1"]);
  });
});

describe("the account's factor preferences", () => {
  it("opting in to the emailed second step makes an OPTIONAL workspace ask for it, and opting out stops it", async () => {
    const ws = await workspace({ otpLogin: OtpLoginMode.OPTIONAL });
    const { email } = await account(ws);
    const factors = createClient(FactorService, transport());
    const tokens = await login(email, ws);
    const listed = await factors.listFactors({}, bearer(tokens.accessToken));
    expect(listed.preferences?.emailCodeSecondStep).toBe(false);
    const on = await factors.updateFactorPreferences(
      { emailCodeSecondStep: true },
      bearer(tokens.accessToken),
    );
    expect(on.preferences?.emailCodeSecondStep).toBe(true);
    const asked = await auth.login({ email, password, workspaceId: ws });
    expect(asked.result.case).toBe("pendingLogin");
    expect((asked.result.value as { factors: FactorType[] }).factors).toEqual([
      FactorType.EMAIL_CODE,
    ]);
    // Unset fields stay as they are.
    const kept = await factors.updateFactorPreferences({}, bearer(tokens.accessToken));
    expect(kept.preferences?.emailCodeSecondStep).toBe(true);
    await factors.updateFactorPreferences(
      { emailCodeSecondStep: false },
      bearer(tokens.accessToken),
    );
    expect((await auth.login({ email, password, workspaceId: ws })).result.case).toBe("tokens");
    // Only with a token.
    expect(
      (await failure(factors.updateFactorPreferences({ emailCodeSecondStep: true }))).code,
    ).toBe(Code.Unauthenticated);
  });
});

describe("SECURITY.md 42: a workspace that requires a factor gets one on every way in", () => {
  it("a member without a factor gets a pending login to set one up, which no emailed code finishes", async () => {
    const ws = await workspace({ mfa: MfaMode.REQUIRED, otpLogin: OtpLoginMode.REQUIRED });
    const { email } = await account(ws);
    const res = await auth.login({ email, password, workspaceId: ws });
    expect(res.result.case).toBe("pendingLogin");
    const pending = res.result.value as {
      pendingLoginId: string;
      enrollmentRequired: boolean;
      factors: number[];
    };
    expect([pending.enrollmentRequired, pending.factors]).toEqual([true, []]);
    // The emailed second step cannot stand in for the factor.
    for (const call of [
      otp.sendOtp({
        purpose: OtpPurpose.LOGIN_SECOND_STEP,
        pendingLoginId: pending.pendingLoginId,
      }),
      otp.verifyOtp({
        purpose: OtpPurpose.LOGIN_SECOND_STEP,
        pendingLoginId: pending.pendingLoginId,
        code: "000000",
      }),
    ]) {
      expect((await failure(call)).code).toBe(Code.NotFound);
    }

    // A magic link is a first factor as well: the same pending login instead of tokens.
    await auth.requestMagicLink({ email, workspaceId: ws });
    const link = linkIn(
      await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("magic-link")),
    );
    const magic = await auth.consumeMagicLink({ token: link.token });
    expect([magic.tokens, magic.pendingLogin?.enrollmentRequired]).toEqual([undefined, true]);
  });

  it("SwitchWorkspace into a workspace that requires a factor answers a pending login", async () => {
    const open = await workspace();
    const strict = await workspace({ mfa: MfaMode.REQUIRED });
    const { email, userId } = await account(open);
    await admin.addMember({ workspaceId: strict, userId, role: Role.MEMBER }, asAdmin());
    const tokens = await login(email, open);
    const res = await auth.switchWorkspace({ workspaceId: strict }, bearer(tokens.accessToken));
    expect([res.tokens, res.pendingLogin?.enrollmentRequired]).toEqual([undefined, true]);
  });

  it("a role that needs a factor may not call AdminService with a password-only token", async () => {
    const ws = await workspace({ mfaRequiredRoles: [Role.ADMIN, Role.OWNER] });
    const { email: adminEmail, userId: adminId } = await account(ws, "admin");
    const { email: memberEmail } = await account(ws);
    // Added as an admin before the rule bit: the admin already has a factor-less session.
    await admin.updateMember({ workspaceId: ws, userId: adminId, role: Role.ADMIN }, asAdmin());
    const before = await auth.login({ email: adminEmail, password, workspaceId: ws });
    // An admin without a factor is asked to set one up, like under mfa required.
    expect(before.result.case).toBe("pendingLogin");

    // A session from before the rule: opened while the member was a plain member.
    const memberTokens = await login(memberEmail, ws);
    const memberUser = (await auth.getSession({}, bearer(memberTokens.accessToken))).user;
    await admin.updateMember(
      { workspaceId: ws, userId: memberUser?.id as string, role: Role.ADMIN },
      asAdmin(),
    );
    const refreshed = await auth.refresh({ refreshToken: memberTokens.refreshToken });
    const refused = await failure(
      admin.listUsers({ workspaceId: ws }, bearer(refreshed.tokens?.accessToken as string)),
    );
    expect([refused.code, refused.reason]).toEqual([Code.PermissionDenied, "MFA_REQUIRED"]);
    // The account's own calls still work, and admin keys are not sessions.
    await auth.getSession({}, bearer(refreshed.tokens?.accessToken as string));
    await admin.listUsers({ workspaceId: ws }, asAdmin());

    // Without the rule, the same kind of token administers the workspace.
    const relaxed = await workspace();
    const { userId: plainAdmin, email: plainEmail } = await account(relaxed, "plain");
    await admin.updateMember(
      { workspaceId: relaxed, userId: plainAdmin, role: Role.ADMIN },
      asAdmin(),
    );
    const plain = await login(plainEmail, relaxed);
    await admin.listUsers({ workspaceId: relaxed }, bearer(plain.accessToken));
  });

  it("passwordless_only refuses password logins as a switched-off flow", async () => {
    const ws = await workspace({ passwordlessOnly: true });
    const { email } = await account(ws);
    const refused = await failure(auth.login({ email, password, workspaceId: ws }));
    expect([refused.code, refused.reason]).toEqual([Code.NotFound, "FLOW_DISABLED"]);
    // The same answer for an address without an account: it tells nothing.
    const unknown = await failure(
      auth.login({ email: address("nobody"), password, workspaceId: ws }),
    );
    expect([unknown.code, unknown.reason]).toEqual([Code.NotFound, "FLOW_DISABLED"]);
  });
});

/** Sets up an authenticator app for a signed-in member; its secret. */
async function withApp(accessToken: string): Promise<string> {
  const factors = createClient(FactorService, transport());
  const enrolled = await factors.enrollTotp({}, bearer(accessToken));
  await factors.confirmTotp({ code: totpCode(enrolled.secret) }, bearer(accessToken));
  return enrolled.secret;
}
/** The app's code, `steps` 30-second steps from now (a code works once: the next is +1). */
const totpCode = (secret: string, steps = 0) =>
  new TOTP({ secret: Secret.fromBase32(secret) }).generate({
    timestamp: Date.now() + steps * 30_000,
  });

/** Password, then the app: a two-factor session. */
async function loginWithApp(email: string, workspaceId: string, secret: string): Promise<Tokens> {
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "pendingLogin") throw new Error("expected a pending login");
  const factors = createClient(FactorService, transport());
  const done = await factors.verifyFactor({
    purpose: FactorPurpose.LOGIN_SECOND_STEP,
    pendingLoginId: res.result.value.pendingLoginId,
    // The confirming code spent this step's: one step ahead is within the window.
    factor: { case: "totpCode", value: totpCode(secret, 1) },
  });
  if (done.result.case !== "tokens") throw new Error("expected tokens");
  return done.result.value;
}

describe("ResetMemberFactors", () => {
  it("removes the member's factors in that workspace only, ends the sessions there and mails them", async () => {
    const a = await workspace();
    const b = await workspace();
    const { email, userId } = await account(a, "lost-phone");
    await admin.addMember({ workspaceId: b, userId, role: Role.MEMBER }, asAdmin());
    const secretA = await withApp((await login(email, a)).accessToken);
    const secretB = await withApp((await login(email, b)).accessToken);
    const inA = await loginWithApp(email, a, secretA);
    const inB = await loginWithApp(email, b, secretB);
    expect([inA.amr, inA.acr]).toEqual([["pwd", "otp", "mfa"], "2"]);
    const keyOfA = (
      await admin.createAdminKey({ name: "a", workspaceId: a, role: AdminKeyRole.ADMIN }, asAdmin())
    ).secret;

    // A's key cannot reach B's factors of the same account.
    const across = await failure(
      admin.resetMemberFactors({ workspaceId: b, userId }, bearer(keyOfA)),
    );
    expect(across.code).toBe(Code.PermissionDenied);

    const removed = await admin.resetMemberFactors({ workspaceId: a, userId }, bearer(keyOfA));
    expect([removed.totpRemoved, removed.recoveryCodesRemoved]).toEqual([1, 10]);
    const mail = await smtp.waitFor(
      (m) =>
        m.to.includes(email) && m.raw.includes("An administrator removed your sign-in factors"),
    );
    expect(mail.raw).not.toContain(secretA);
    // A's session ended; A now signs in with the password alone (mfa is optional there).
    expect((await failure(auth.getSession({}, bearer(inA.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await login(email, a)).amr).toEqual(["pwd"]);
    // B's factor, and B's session, are as they were.
    await auth.getSession({}, bearer(inB.accessToken));
    const inBAgain = await auth.login({ email, password, workspaceId: b });
    expect(inBAgain.result.case).toBe("pendingLogin");
    expect((inBAgain.result.value as { factors: FactorType[] }).factors).toContain(FactorType.TOTP);
  });

  it("a workspace admin may not reset an owner's factors", async () => {
    const ws = await workspace();
    const { email: ownerEmail, userId: ownerId } = await account(ws, "owner");
    await admin.updateMember({ workspaceId: ws, userId: ownerId, role: Role.OWNER }, asAdmin());
    await withApp((await login(ownerEmail, ws)).accessToken);
    const { email: adminEmail, userId: adminId } = await account(ws, "deputy");
    await admin.updateMember({ workspaceId: ws, userId: adminId, role: Role.ADMIN }, asAdmin());
    const deputy = await login(adminEmail, ws);
    const refused = await failure(
      admin.resetMemberFactors({ workspaceId: ws, userId: ownerId }, bearer(deputy.accessToken)),
    );
    expect(refused.code).toBe(Code.PermissionDenied);
    const still = await auth.login({ email: ownerEmail, password, workspaceId: ws });
    expect(still.result.case).toBe("pendingLogin");
  });
});

describe("SECURITY.md 42: the mailbox and a stale session do not stand in for a factor", () => {
  it("changing a member's factors needs a proof from a factor, not an emailed code", async () => {
    const ws = await workspace();
    const { email } = await account(ws, "stale");
    // Two sessions from before the app: password only, alive through refreshes. Setting up
    // the first factor in one ends the other.
    const other = await login(email, ws);
    const stale = await login(email, ws);
    const secret = await withApp(stale.accessToken);
    expect((await failure(auth.getSession({}, bearer(other.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await failure(auth.refresh({ refreshToken: other.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
    const otpByMail = async () => {
      const seen = new Set(smtp.received);
      await otp.sendOtp({ purpose: OtpPurpose.SENSITIVE_ACTION }, bearer(stale.accessToken));
      const code = codeIn(
        await smtp.waitFor(
          (m) => !seen.has(m) && m.to.includes(email) && m.raw.includes("Confirm your action"),
        ),
      );
      const res = await otp.verifyOtp(
        { purpose: OtpPurpose.SENSITIVE_ACTION, code },
        bearer(stale.accessToken),
      );
      if (res.result.case !== "actionProof") throw new Error("no action proof");
      return res.result.value.proof;
    };
    const factors = createClient(FactorService, transport());
    for (const call of [
      async () =>
        factors.regenerateRecoveryCodes(
          { actionProof: await otpByMail() },
          bearer(stale.accessToken),
        ),
      async () => factors.removeTotp({ actionProof: await otpByMail() }, bearer(stale.accessToken)),
    ]) {
      const refused = await failure(call());
      expect([refused.code, refused.reason]).toEqual([
        Code.PermissionDenied,
        "ACTION_PROOF_REQUIRED",
      ]);
    }
    expect((await factors.listFactors({}, bearer(stale.accessToken))).totpCreateTime).toBeDefined();
    // A proof from the app itself does it.
    const proof = await factors.verifyFactor(
      {
        purpose: FactorPurpose.SENSITIVE_ACTION,
        factor: { case: "totpCode", value: totpCode(secret, 1) },
      },
      bearer(stale.accessToken),
    );
    const fresh = await factors.regenerateRecoveryCodes(
      { actionProof: (proof.result.value as { proof: string }).proof },
      bearer(stale.accessToken),
    );
    expect(fresh.recoveryCodes).toHaveLength(10);
  });

  it("a password login that owes a factor keeps the failure count, so guesses at the factor stay bounded", async () => {
    const ws = await workspace();
    const { email } = await account(ws, "guessed");
    await withApp((await login(email, ws)).accessToken);
    const factors = createClient(FactorService, transport());
    let checked = 0;
    let locked = false;
    for (let round = 0; round < 6 && !locked; round++) {
      const res = await auth
        .login({ email, password, workspaceId: ws })
        .catch((e: unknown) => e as Error);
      if (res instanceof Error) {
        locked = (await failure(Promise.reject(res))).reason === "ACCOUNT_LOCKED";
        break;
      }
      const pendingLoginId = (res.result.value as { pendingLoginId: string }).pendingLoginId;
      for (let i = 0; i < 2; i++) {
        const wrong = await failure(
          factors.verifyFactor({
            purpose: FactorPurpose.LOGIN_SECOND_STEP,
            pendingLoginId,
            factor: { case: "totpCode", value: "000000" },
          }),
        );
        if (wrong.reason === "ACCOUNT_LOCKED") {
          locked = true;
          break;
        }
        expect(wrong.reason).toBe("CODE_INVALID");
        checked++;
      }
    }
    // Five attempts in a row lock the account: logins and codes together.
    expect(locked).toBe(true);
    expect(checked).toBeLessThan(5);
  });

  it("ending a member's sessions also ends the logins still waiting for their factor", async () => {
    const ws = await workspace({ mfa: MfaMode.REQUIRED });
    const { email, userId } = await account(ws, "half-done");
    const factors = createClient(FactorService, transport());
    const res = await auth.login({ email, password, workspaceId: ws });
    const pendingLoginId = (res.result.value as { pendingLoginId: string }).pendingLoginId;
    await admin.revokeUserSessions({ userId, workspaceId: ws }, asAdmin());
    expect((await failure(factors.enrollTotp({ pendingLoginId }))).code).toBe(Code.NotFound);

    // The same for a pending login that waits for an existing factor.
    const again = await auth.login({ email, password, workspaceId: ws });
    const enroll = (again.result.value as { pendingLoginId: string }).pendingLoginId;
    const enrolled = await factors.enrollTotp({ pendingLoginId: enroll });
    await factors.confirmTotp({ pendingLoginId: enroll, code: totpCode(enrolled.secret) });
    const step = await auth.login({ email, password, workspaceId: ws });
    const stepId = (step.result.value as { pendingLoginId: string }).pendingLoginId;
    await admin.resetMemberFactors({ workspaceId: ws, userId }, asAdmin());
    const late = await failure(
      factors.verifyFactor({
        purpose: FactorPurpose.LOGIN_SECOND_STEP,
        pendingLoginId: stepId,
        factor: { case: "totpCode", value: totpCode(enrolled.secret, 1) },
      }),
    );
    expect(late.code).toBe(Code.NotFound);
  });

  it("SwitchWorkspace does not carry a password into a passwordless workspace", async () => {
    const open = await workspace();
    const strict = await workspace({ passwordlessOnly: true });
    const { email, userId } = await account(open, "switcher");
    await admin.addMember({ workspaceId: strict, userId, role: Role.MEMBER }, asAdmin());
    const tokens = await login(email, open);
    const refused = await failure(
      auth.switchWorkspace({ workspaceId: strict }, bearer(tokens.accessToken)),
    );
    expect([refused.code, refused.reason]).toEqual([Code.NotFound, "FLOW_DISABLED"]);
  });
});

describe("keygate/verify and requireMfa", () => {
  let verifier: ReturnType<typeof createVerifier>;
  let service: Server;
  let serviceUrl: string;
  let tokens: Tokens;

  beforeAll(async () => {
    const ws = await workspace();
    const { email } = await account(ws);
    tokens = await login(email, ws);
    verifier = createVerifier({
      baseUrl: keygate.url,
      adminKey,
      audience: keygate.config.audience,
      issuer: keygate.config.issuer,
      transport: "connect",
    });
    const middleware = keygateMiddleware(verifier, { requireMfa: true });
    service = createServer((req, res) =>
      middleware(req, res, () => {
        res.end("ok");
      }),
    );
    await new Promise<void>((resolve) => service.listen(0, "127.0.0.1", resolve));
    const port = (service.address() as { port: number }).port;
    serviceUrl = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await verifier?.close();
    await new Promise((resolve) => service?.close(resolve));
  });

  it("accepts a two-factor token where two are required, over Connect and HTTP", async () => {
    const ws = await workspace();
    const { email } = await account(ws, "two-factor");
    const secret = await withApp((await login(email, ws)).accessToken);
    const strong = await loginWithApp(email, ws, secret);
    const caller = await until(() => verifier.verify(strong.accessToken, { requireMfa: true }));
    expect([caller.amr, caller.acr]).toEqual([["pwd", "otp", "mfa"], "2"]);
    const res = await fetch(serviceUrl, {
      headers: { authorization: `Bearer ${strong.accessToken}` },
    });
    expect([res.status, await res.text()]).toEqual([200, "ok"]);
  });

  it("gives the caller's amr and acr, and refuses a single-factor token where two are required", async () => {
    const caller = await until(() => verifier.verify(tokens.accessToken));
    expect([caller.amr, caller.acr]).toEqual([["pwd"], "1"]);
    const refused = await verifier
      .verify(tokens.accessToken, { requireMfa: true })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(VerifyError);
    expect((refused as VerifyError).reason).toBe("mfa_required");

    const res = await fetch(serviceUrl, {
      headers: { authorization: `Bearer ${tokens.accessToken}` },
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain(
      'error="insufficient_user_authentication"',
    );
    expect(((await res.json()) as { error: string }).error).toBe("mfa_required");
  });
});

/** Retries while the verifier's feed is still starting (it refuses with `stale` until then). */
async function until<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (error) {
      if (!(error instanceof VerifyError) || error.reason !== "stale" || i > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
