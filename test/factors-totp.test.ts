import { execFileSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { toJson } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import {
  FactorPurpose,
  FactorService,
  ListFactorsResponseSchema,
} from "../gen/keygate/v1/factor_service_pb.js";
import { OtpService } from "../gen/keygate/v1/otp_service_pb.js";
import { AdminKeyRole, FactorType, Role, UserSchema } from "../gen/keygate/v1/types_pb.js";
import { ManualClock } from "../src/clock.js";
import { sql } from "../src/db/sql.js";
import { failure } from "./support/failure.js";
import { bearer } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { mailText, startSmtpServer } from "./support/smtp.js";

// Authenticator apps and recovery codes against a real server, with Debian's oathtool as the
// independent TOTP generator. The server runs on a manual clock, and oathtool is asked for
// the code of the server's time (-N), so window edges are exact, not timing-dependent.
// Without oathtool these tests fail: the codes Keygate must accept come from it.

// 10 s into a 30-second step: "now" and its neighbours are unambiguous.
const clock = new ManualClock(Math.floor(Date.now() / 30_000) * 30_000 + 10_000);
const lockoutThreshold = 12;
let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let otp: ReturnType<typeof createClient<typeof OtpService>>;
let factors: ReturnType<typeof createClient<typeof FactorService>>;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let ws: string;
let adminKey: string;
const password = "correct horse battery staple";
let n = 0;
const email = (tag: string) => `${tag}-${++n}@example.test`;
const asAdmin = () => bearer(adminKey);

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate(
    {
      KEYGATE_SMTP_URL: smtp.url,
      KEYGATE_LOCKOUT_THRESHOLD: String(lockoutThreshold),
      KEYGATE_WORKSPACE_DEFAULTS: JSON.stringify({ email_verification: "off" }),
    },
    { clock },
  );
  ws = keygate.bootstrapped?.workspaceId as string;
  adminKey = keygate.bootstrapped?.adminKey as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  auth = createClient(AuthService, transport);
  otp = createClient(OtpService, transport);
  factors = createClient(FactorService, transport);
  admin = createClient(AdminService, transport);
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

/** The code oathtool computes for the secret at the given time (the server's, by default). */
function oath(secret: string, atMs = clock.now().getTime()): string {
  return execFileSync("oathtool", ["--totp", "-b", "-N", `@${Math.floor(atMs / 1000)}`, secret], {
    encoding: "utf8",
  }).trim();
}
const step = 30_000;
/** A step the app has not used yet: codes work once per step. */
const nextStep = () => clock.advance(step);

function base32Bytes(text: string): Buffer {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of text.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const bytes: number[] = [];
  for (let i = 0; i + 8 <= bits.length; i += 8)
    bytes.push(Number.parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

async function setting(workspaceId: string, json: object) {
  await keygate.database.pool.query(sql.unsafe`
    UPDATE workspaces SET settings = ${sql.jsonb(json as Record<string, string>)} WHERE id = ${workspaceId}`);
}

async function account(tag: string, workspaceId = ws) {
  const address = email(tag);
  await auth.signUp({ email: address, password }, { headers: { "x-workspace-id": workspaceId } });
  return address;
}

async function login(address: string, workspaceId = ws) {
  return auth.login({ email: address, password, workspaceId });
}

async function signIn(address: string, workspaceId = ws): Promise<string> {
  const res = await login(address, workspaceId);
  if (res.result.case !== "tokens") throw new Error(`expected tokens, got ${res.result.case}`);
  return res.result.value.accessToken;
}

async function pendingId(address: string, workspaceId = ws) {
  const res = await login(address, workspaceId);
  if (res.result.case !== "pendingLogin") throw new Error(`expected a pending login`);
  return res.result.value;
}

/** Enrolls and confirms an app for the signed-in member; its secret and recovery codes. */
async function withApp(token: string) {
  const enrolled = await factors.enrollTotp({}, bearer(token));
  const confirmed = await factors.confirmTotp({ code: oath(enrolled.secret) }, bearer(token));
  return { secret: enrolled.secret, recoveryCodes: confirmed.recoveryCodes };
}

/** An action proof through the app, at the next step. */
async function proofVia(token: string, secret: string) {
  nextStep();
  const res = await factors.verifyFactor(
    {
      purpose: FactorPurpose.SENSITIVE_ACTION,
      factor: { case: "totpCode", value: oath(secret) },
    },
    bearer(token),
  );
  if (res.result.case !== "actionProof") throw new Error("expected an action proof");
  return res.result.value.proof;
}

const verifyTotp = (token: string, code: string) =>
  factors.verifyFactor(
    { purpose: FactorPurpose.SENSITIVE_ACTION, factor: { case: "totpCode", value: code } },
    bearer(token),
  );

const secondStep = (
  pending: string,
  factor: { case: "totpCode" | "recoveryCode"; value: string },
) =>
  factors.verifyFactor({
    purpose: FactorPurpose.LOGIN_SECOND_STEP,
    pendingLoginId: pending,
    factor,
  });

async function userId(address: string) {
  return (await admin.listUsers({ emailPrefix: address }, asAdmin())).users[0]?.id as string;
}

async function auditTypes(uid: string, workspaceId = ws): Promise<string[]> {
  const rows = await keygate.database.pool.any(sql.type(z.object({ type: z.string() }))`
    SELECT type FROM audit_events WHERE user_id = ${uid} AND workspace_id = ${workspaceId}
    ORDER BY created_at, id`);
  return rows.map((r) => r.type);
}

const mailsSaying = (address: string, text: string) =>
  smtp.received.filter((m) => m.to.includes(address) && mailText(m).includes(text));

const jwtPayload = (token: string) =>
  JSON.parse(Buffer.from(token.split(".")[1] as string, "base64url").toString("utf8"));

describe("SECURITY.md 39: authenticator-app secrets sealed at rest, codes single use within their step, window ±1, guesses count towards the lockout", () => {
  it("oathtool is installed: it is the independent generator these tests trust", () => {
    expect(oath("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 59_000)).toBe("287082");
  });

  it("enrolls with a code from oathtool; the secret is answered once and is in no later answer, the audit log or the database", async () => {
    const address = await account("enroll");
    const token = await signIn(address);
    const enrolled = await factors.enrollTotp({}, bearer(token));
    expect(enrolled.secret).toMatch(/^[A-Z2-7]{32}$/);
    const raw = base32Bytes(enrolled.secret);
    expect(raw.length).toBe(20);
    const uri = new URL(enrolled.otpauthUri);
    expect(uri.protocol).toBe("otpauth:");
    expect(uri.host).toBe("totp");
    expect(decodeURIComponent(uri.pathname)).toContain(address);
    expect(uri.searchParams.get("secret")).toBe(enrolled.secret);
    expect(uri.searchParams.get("algorithm")).toBe("SHA1");
    expect(uri.searchParams.get("digits")).toBe("6");
    expect(uri.searchParams.get("period")).toBe("30");
    expect(uri.searchParams.get("issuer")).toBeTruthy();
    expect(enrolled.qrCodeSvg).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
    expect(Number(enrolled.expireTime?.seconds) * 1000).toBeGreaterThan(clock.now().getTime());

    // Not confirmed yet: not a factor.
    expect((await factors.listFactors({}, bearer(token))).totpCreateTime).toBeUndefined();
    expect((await login(address)).result.case).toBe("tokens");
    // A wrong code does not confirm.
    const wrong = String((Number(oath(enrolled.secret)) + 1) % 1_000_000).padStart(6, "0");
    expect((await failure(factors.confirmTotp({ code: wrong }, bearer(token)))).reason).toBe(
      "CODE_INVALID",
    );

    const confirmed = await factors.confirmTotp({ code: oath(enrolled.secret) }, bearer(token));
    expect(confirmed.tokens).toBeUndefined();
    // The code that confirmed the app has been used.
    expect((await failure(verifyTotp(token, oath(enrolled.secret)))).reason).toBe("CODE_INVALID");
    expect(confirmed.recoveryCodes).toHaveLength(10);
    const listed = await factors.listFactors({}, bearer(token));
    expect(Number(listed.totpCreateTime?.seconds)).toBe(Math.floor(clock.now().getTime() / 1000));
    expect(listed.recoveryCodesLeft).toBe(10);
    const listedJson = JSON.stringify(toJson(ListFactorsResponseSchema, listed));
    expect(listedJson).not.toContain(enrolled.secret);

    // Once confirmed, enrolling again is refused and answers no secret.
    const again = await failure(factors.enrollTotp({}, bearer(token)));
    expect(again.code).toBe(Code.AlreadyExists);
    expect(again.error.rawMessage).not.toContain(enrolled.secret);

    // No admin answer carries it either.
    const uid = await userId(address);
    const user = await admin.getUser({ userId: uid, workspaceId: ws }, asAdmin());
    expect(JSON.stringify(toJson(UserSchema, user.user as never))).not.toContain(enrolled.secret);

    // At rest: neither the base32 text nor the raw bytes, in any column of the row.
    const row = await keygate.database.pool.one(sql.type(
      z.object({ secret_sealed: z.instanceof(Buffer), whole: z.string() }),
    )`
      SELECT secret_sealed, t::text AS whole FROM totp_factors t
      WHERE workspace_id = ${ws} AND user_id = ${uid}`);
    const sealed = row.secret_sealed as Buffer;
    expect(sealed.length).toBeGreaterThan(20);
    expect(sealed.includes(raw)).toBe(false);
    expect(sealed.includes(Buffer.from(enrolled.secret))).toBe(false);
    const whole = row.whole as string;
    expect(whole).not.toContain(raw.toString("hex"));
    expect(whole.toUpperCase()).not.toContain(enrolled.secret);
    const audits = await keygate.database.pool.one(sql.type(z.object({ text: z.string() }))`
      SELECT coalesce(string_agg(details::text, ' '), '') AS text FROM audit_events WHERE user_id = ${uid}`);
    expect(audits.text as string).not.toContain(enrolled.secret);
    for (const code of confirmed.recoveryCodes) expect(audits.text as string).not.toContain(code);

    expect(await auditTypes(uid)).toEqual(
      expect.arrayContaining(["totp_enrollment_started", "factor_failed", "totp_added"]),
    );
    const mail = await smtp.waitFor(
      (m) => m.to.includes(address) && mailText(m).includes("An authenticator app was added"),
    );
    expect(mailText(mail)).not.toContain(enrolled.secret);
  });

  it("an app added next to another factor answers no recovery codes: the member has a set already", async () => {
    const address = await account("second-factor");
    const uid = await userId(address);
    const token = await signIn(address);
    // A passkey the member set up before (as its flow stores it).
    await keygate.database.pool.query(sql.unsafe`
      INSERT INTO passkeys (workspace_id, user_id, credential_id, public_key, name, created_at)
      VALUES (${ws}, ${uid}, ${sql.binary(Buffer.from(randomUUID()))}, ${sql.binary(Buffer.from("key"))},
              'laptop', now())`);
    const { recoveryCodes } = await withApp(token);
    expect(recoveryCodes).toEqual([]);
    expect((await factors.listFactors({}, bearer(token))).totpCreateTime).toBeDefined();
  });

  it("password and app give tokens with amr pwd, otp, mfa and acr 2, in the answer and the JWT", async () => {
    const address = await account("amr");
    const { secret } = await withApp(await signIn(address));
    const pending = await pendingId(address);
    expect(pending.enrollmentRequired).toBe(false);
    expect(pending.factors).toEqual([FactorType.TOTP, FactorType.RECOVERY_CODE]);
    // The emailed-code path does not finish a factor step.
    expect(
      (
        await failure(
          otp.verifyOtp({ purpose: 1, pendingLoginId: pending.pendingLoginId, code: "000000" }),
        )
      ).code,
    ).toBe(Code.NotFound);
    nextStep();
    const code = oath(secret);
    const res = await secondStep(pending.pendingLoginId, { case: "totpCode", value: code });
    expect(res.result.case).toBe("tokens");
    const tokens = res.result.value as { accessToken: string; amr: string[]; acr: string };
    expect(tokens.amr).toEqual(["pwd", "otp", "mfa"]);
    expect(tokens.acr).toBe("2");
    const claims = jwtPayload(tokens.accessToken);
    expect(claims.amr).toEqual(["pwd", "otp", "mfa"]);
    expect(claims.acr).toBe("2");
    expect((await auth.getSession({}, bearer(tokens.accessToken))).user?.email).toBe(address);
    // The pending login is finished.
    const again = await failure(
      secondStep(pending.pendingLoginId, { case: "totpCode", value: code }),
    );
    expect(again.code).toBe(Code.NotFound);
  });

  it("a code works once; the window is one step either side; an earlier step than the last used never works", async () => {
    const address = await account("window");
    const token = await signIn(address);
    const { secret } = await withApp(token);
    clock.advance(5 * step);
    const now = () => clock.now().getTime();
    const refused = async (code: string) =>
      expect((await failure(verifyTotp(token, code))).reason).toBe("CODE_INVALID");
    const accepted = async (code: string) =>
      expect((await verifyTotp(token, code)).result.case).toBe("actionProof");

    await refused(oath(secret, now() - 2 * step));
    await refused(oath(secret, now() + 2 * step));
    const previous = oath(secret, now() - step);
    await accepted(previous);
    await refused(previous);
    const current = oath(secret, now());
    await accepted(current);
    await refused(current);
    await refused(previous);
    const next = oath(secret, now() + step);
    await accepted(next);
    // The current step is now earlier than the last one used.
    await refused(current);
    nextStep();
    await refused(next);
    nextStep();
    await accepted(oath(secret));
  });

  it("concurrent uses of one code: exactly one succeeds", async () => {
    const address = await account("race");
    const token = await signIn(address);
    const { secret } = await withApp(token);
    nextStep();
    const code = oath(secret);
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, () => verifyTotp(token, code)),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results) {
      if (r.status === "rejected")
        expect((await failure(Promise.reject(r.reason))).reason).toBe("CODE_INVALID");
    }
  });

  it("wrong codes count towards the account's lockout exactly as wrong passwords do, and are audited", async () => {
    const address = await account("lockout");
    const uid = await userId(address);
    const { secret } = await withApp(await signIn(address));
    const threshold = keygate.config.lockout.threshold;
    expect(threshold).toBe(lockoutThreshold);
    const pending = (await pendingId(address)).pendingLoginId;
    nextStep();
    const right = oath(secret);
    const wrong = String((Number(right) + 500_000) % 1_000_000).padStart(6, "0");
    // The password login that still owes the factor, a wrong password and wrong codes share
    // one count (the login's right password does not clear it while a factor is owed).
    expect(
      (await failure(auth.login({ email: address, password: "wrong", workspaceId: ws }))).reason,
    ).toBe("INVALID_CREDENTIALS");
    for (let i = 0; i < threshold - 2; i++) {
      expect((await failure(secondStep(pending, { case: "totpCode", value: wrong }))).reason).toBe(
        "CODE_INVALID",
      );
    }
    // Locked: the right code is refused before it is checked, and so is the right password.
    const locked = await failure(secondStep(pending, { case: "totpCode", value: right }));
    expect(locked.code).toBe(Code.ResourceExhausted);
    expect(locked.reason).toBe("ACCOUNT_LOCKED");
    expect((await failure(login(address))).reason).toBe("ACCOUNT_LOCKED");
    const failed = (await auditTypes(uid)).filter((t) => t === "factor_failed");
    expect(failed).toHaveLength(threshold - 2);

    // Once the lockout has passed, the right code works (not spent by the refusal) and clears
    // the count: as many wrong codes again do not lock.
    clock.advance(keygate.config.lockout.baseSeconds * 1000 + 1000);
    const fresh = (await pendingId(address)).pendingLoginId;
    const code = oath(secret);
    expect((await secondStep(fresh, { case: "totpCode", value: code })).result.case).toBe("tokens");
    const token = await (async () => {
      const p = (await pendingId(address)).pendingLoginId;
      nextStep();
      const r = await secondStep(p, { case: "totpCode", value: oath(secret) });
      return (r.result.value as { accessToken: string }).accessToken;
    })();
    for (let i = 0; i < threshold - 1; i++) {
      expect((await failure(verifyTotp(token, "000000"))).reason).toBe("CODE_INVALID");
    }
    nextStep();
    expect((await verifyTotp(token, oath(secret))).result.case).toBe("actionProof");
  });

  it("a sealed secret copied onto another membership's row does not verify there", async () => {
    const x = await account("copy-from");
    const y = await account("copy-to");
    const tokenY = await signIn(y);
    const { secret: secretX } = await withApp(await signIn(x));
    const { secret: secretY } = await withApp(tokenY);
    const [uidX, uidY] = [await userId(x), await userId(y)];
    const sealedOf = async (uid: string, workspaceId = ws) =>
      (
        await keygate.database.pool.one(sql.type(z.object({ secret_sealed: z.instanceof(Buffer) }))`
          SELECT secret_sealed FROM totp_factors WHERE workspace_id = ${workspaceId} AND user_id = ${uid}`)
      ).secret_sealed as Buffer;
    const ownY = await sealedOf(uidY);
    const copy = async (sealed: Buffer, uid: string, workspaceId = ws) =>
      keygate.database.pool.query(sql.unsafe`
        UPDATE totp_factors SET secret_sealed = ${sql.binary(sealed)}
        WHERE workspace_id = ${workspaceId} AND user_id = ${uid}`);

    await copy(await sealedOf(uidX), uidY);
    nextStep();
    expect((await failure(verifyTotp(tokenY, oath(secretX)))).reason).toBe("CODE_INVALID");
    expect((await failure(verifyTotp(tokenY, oath(secretY)))).reason).toBe("CODE_INVALID");

    // The same account in another workspace: bound to the workspace too.
    const other = (
      await admin.createWorkspace({ name: "Copy target", slug: `copy-${++n}` }, asAdmin())
    ).workspace?.id as string;
    await admin.markEmailVerified({ userId: uidX }, asAdmin());
    await admin.provisionUser({ email: x, workspaceId: other, role: Role.MEMBER }, asAdmin());
    const tokenXOther = await signIn(x, other);
    await withApp(tokenXOther);
    await copy(await sealedOf(uidX), uidX, other);
    nextStep();
    expect((await failure(verifyTotp(tokenXOther, oath(secretX)))).reason).toBe("CODE_INVALID");

    // Its own sealed secret back, the member's own code works: the copy was the only change.
    await copy(ownY, uidY);
    expect((await verifyTotp(tokenY, oath(secretY))).result.case).toBe("actionProof");
  });

  it("workspace A's app never completes a login into workspace B of the same account, and B's admin neither sees nor removes it", async () => {
    const address = await account("two-workspaces");
    const uid = await userId(address);
    const b = (await admin.createWorkspace({ name: "Second", slug: `second-${++n}` }, asAdmin()))
      .workspace?.id as string;
    await setting(b, { email_verification: "off", mfa: "required" });
    await admin.markEmailVerified({ userId: uid }, asAdmin());
    await admin.provisionUser({ email: address, workspaceId: b, role: Role.MEMBER }, asAdmin());
    const tokenA = await signIn(address);
    const { secret: secretA, recoveryCodes: codesA } = await withApp(tokenA);

    // In B the member has no factor: B asks for one to be set up, and A's do not count.
    const enrolling = await pendingId(address, b);
    expect(enrolling.enrollmentRequired).toBe(true);
    expect(enrolling.factors).toEqual([]);
    nextStep();
    const codeA = oath(secretA);
    expect(
      (await failure(secondStep(enrolling.pendingLoginId, { case: "totpCode", value: codeA })))
        .code,
    ).toBe(Code.NotFound);
    expect(
      (
        await failure(
          secondStep(enrolling.pendingLoginId, {
            case: "recoveryCode",
            value: codesA[0] as string,
          }),
        )
      ).code,
    ).toBe(Code.NotFound);
    // Confirming with A's code finds no enrollment in B.
    expect(
      (
        await failure(
          factors.confirmTotp({ code: codeA, pendingLoginId: enrolling.pendingLoginId }),
        )
      ).code,
    ).toBe(Code.NotFound);

    // B's own app, set up through the pending login.
    const enrolledB = await factors.enrollTotp({ pendingLoginId: enrolling.pendingLoginId });
    expect(enrolledB.secret).not.toBe(secretA);
    expect(
      (
        await failure(
          factors.confirmTotp({ code: oath(secretA), pendingLoginId: enrolling.pendingLoginId }),
        )
      ).reason,
    ).toBe("CODE_INVALID");
    const inB = await factors.confirmTotp({
      code: oath(enrolledB.secret),
      pendingLoginId: enrolling.pendingLoginId,
    });
    expect(inB.tokens?.workspaceId).toBe(b);

    // A login into B takes B's factor only.
    const pendingB = (await pendingId(address, b)).pendingLoginId;
    nextStep();
    expect(
      (await failure(secondStep(pendingB, { case: "totpCode", value: oath(secretA) }))).reason,
    ).toBe("CODE_INVALID");
    expect(
      (await failure(secondStep(pendingB, { case: "recoveryCode", value: codesA[1] as string })))
        .reason,
    ).toBe("CODE_INVALID");
    const done = await secondStep(pendingB, { case: "totpCode", value: oath(enrolledB.secret) });
    expect((done.result.value as { workspaceId: string }).workspaceId).toBe(b);

    // B's admin: nothing of A's factor in its answers, no reach into A, and removing the
    // member from B leaves A's app and codes working in A.
    const keyB = (
      await admin.createAdminKey({ name: "b", workspaceId: b, role: AdminKeyRole.ADMIN }, asAdmin())
    ).secret;
    const seen = await admin.getUser({ userId: uid, workspaceId: b }, bearer(keyB));
    const seenJson = JSON.stringify(toJson(UserSchema, seen.user as never));
    expect(seenJson).not.toContain(secretA);
    expect(seenJson.toLowerCase()).not.toContain("totp");
    expect(
      (await failure(admin.getUser({ userId: uid, workspaceId: ws }, bearer(keyB)))).code,
    ).toBe(Code.PermissionDenied);
    expect(
      (await failure(admin.removeMember({ workspaceId: ws, userId: uid }, bearer(keyB)))).code,
    ).toBe(Code.PermissionDenied);
    expect(
      (await failure(admin.resetMemberFactors({ workspaceId: ws, userId: uid }, bearer(keyB))))
        .code,
    ).toBe(Code.PermissionDenied);
    // Resetting the member's factors in B removes B's app and codes, never A's.
    const reset = await admin.resetMemberFactors({ workspaceId: b, userId: uid }, bearer(keyB));
    expect(reset.totpRemoved).toBe(1);
    expect(reset.recoveryCodesRemoved).toBe(10);
    const auditB = await admin.listAuditEvents({ workspaceId: b, userId: uid }, bearer(keyB));
    expect(auditB.events.every((e) => e.workspaceId === b)).toBe(true);
    await admin.removeMember({ workspaceId: b, userId: uid }, bearer(keyB));
    const left = await keygate.database.pool.one(sql.type(z.object({ n: z.number() }))`
      SELECT count(*)::int AS n FROM totp_factors WHERE user_id = ${uid}`);
    expect(left.n).toBe(1);
    const listedA = await factors.listFactors({}, bearer(tokenA));
    expect(listedA.totpCreateTime).toBeDefined();
    expect(listedA.recoveryCodesLeft).toBe(10);
    nextStep();
    expect((await verifyTotp(tokenA, oath(secretA))).result.case).toBe("actionProof");
  });

  it("a workspace that requires a factor: Login answers enrollment_required, the member enrolls with the pending login alone, ConfirmTotp answers tokens", async () => {
    const w = (await admin.createWorkspace({ name: "Strict", slug: `strict-${++n}` }, asAdmin()))
      .workspace?.id as string;
    await setting(w, { email_verification: "off", mfa: "required" });
    const address = await account("required", w);
    const pending = await pendingId(address, w);
    expect(pending.enrollmentRequired).toBe(true);
    // Neither a token nor a pending login: nobody to enroll.
    expect((await failure(factors.enrollTotp({}))).code).toBe(Code.Unauthenticated);
    expect((await failure(factors.enrollTotp({ pendingLoginId: randomUUID() }))).code).toBe(
      Code.NotFound,
    );
    const enrolled = await factors.enrollTotp({ pendingLoginId: pending.pendingLoginId });
    // A second enrollment replaces the first, unconfirmed one.
    const replaced = await factors.enrollTotp({ pendingLoginId: pending.pendingLoginId });
    expect(replaced.secret).not.toBe(enrolled.secret);
    expect(
      (
        await failure(
          factors.confirmTotp({
            code: oath(enrolled.secret),
            pendingLoginId: pending.pendingLoginId,
          }),
        )
      ).reason,
    ).toBe("CODE_INVALID");
    const confirmed = await factors.confirmTotp({
      code: oath(replaced.secret),
      pendingLoginId: pending.pendingLoginId,
    });
    expect(confirmed.recoveryCodes).toHaveLength(10);
    expect(confirmed.tokens?.amr).toEqual(["pwd", "otp", "mfa"]);
    expect(confirmed.tokens?.acr).toBe("2");
    expect(jwtPayload(confirmed.tokens?.accessToken as string).amr).toEqual(["pwd", "otp", "mfa"]);
    // The pending login is spent, and the next login asks for the factor.
    expect(
      (await failure(factors.enrollTotp({ pendingLoginId: pending.pendingLoginId }))).code,
    ).toBe(Code.NotFound);
    const next = await pendingId(address, w);
    expect(next.enrollmentRequired).toBe(false);
    expect(next.factors).toContain(FactorType.TOTP);
    // A pending login that waits for a factor is not an enrollment.
    expect((await failure(factors.enrollTotp({ pendingLoginId: next.pendingLoginId }))).code).toBe(
      Code.NotFound,
    );

    // The last factor of a member who needs one stays.
    const token = confirmed.tokens?.accessToken as string;
    const proof = await proofVia(token, replaced.secret);
    const kept = await failure(factors.removeTotp({ actionProof: proof }, bearer(token)));
    expect(kept.code).toBe(Code.FailedPrecondition);
    expect(kept.reason).toBe("FACTOR_REQUIRED");
  });

  it("EnrollTotp: NOT_FOUND (FLOW_DISABLED) where mfa is off; an action proof where the workspace asks for one", async () => {
    const w = (await admin.createWorkspace({ name: "Off", slug: `off-${++n}` }, asAdmin()))
      .workspace?.id as string;
    await setting(w, { email_verification: "off", mfa: "off" });
    const address = await account("off", w);
    const token = await signIn(address, w);
    const off = await failure(factors.enrollTotp({}, bearer(token)));
    expect(off.code).toBe(Code.NotFound);
    expect(off.reason).toBe("FLOW_DISABLED");

    await setting(w, { email_verification: "off", action_proof_required: true });
    const denied = await failure(factors.enrollTotp({}, bearer(token)));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(denied.reason).toBe("ACTION_PROOF_REQUIRED");
    await otp.sendOtp({ purpose: 4 }, bearer(token));
    const mail = await smtp.waitFor(
      (m) => m.to.includes(address) && /^ {4}\d{6}\r?$/m.test(mailText(m)),
    );
    const code = /^ {4}(\d{6})\r?$/m.exec(mailText(mail))?.[1] as string;
    const verified = await otp.verifyOtp({ purpose: 4, code }, bearer(token));
    const proof = (verified.result.value as { proof: string }).proof;
    expect((await factors.enrollTotp({ actionProof: proof }, bearer(token))).secret).toMatch(
      /^[A-Z2-7]{32}$/,
    );
  });

  it("RemoveTotp needs an action proof; then the app, and with it the recovery codes, stop working", async () => {
    const address = await account("remove");
    const token = await signIn(address);
    const { secret, recoveryCodes } = await withApp(token);
    const uid = await userId(address);
    const noProof = await failure(factors.removeTotp({}, bearer(token)));
    expect(noProof.code).toBe(Code.PermissionDenied);
    expect(noProof.reason).toBe("ACTION_PROOF_REQUIRED");
    const proof = await proofVia(token, secret);
    await factors.removeTotp({ actionProof: proof }, bearer(token));
    // The proof was spent; and nothing is left to remove.
    expect((await failure(factors.removeTotp({ actionProof: proof }, bearer(token)))).code).toBe(
      Code.NotFound,
    );
    const listed = await factors.listFactors({}, bearer(token));
    expect(listed.totpCreateTime).toBeUndefined();
    expect(listed.recoveryCodesLeft).toBe(0);
    nextStep();
    expect((await failure(verifyTotp(token, oath(secret)))).reason).toBe("CODE_INVALID");
    expect(
      (
        await failure(
          factors.verifyFactor(
            {
              purpose: FactorPurpose.SENSITIVE_ACTION,
              factor: { case: "recoveryCode", value: recoveryCodes[0] as string },
            },
            bearer(token),
          ),
        )
      ).reason,
    ).toBe("CODE_INVALID");
    expect((await login(address)).result.case).toBe("tokens");
    expect(await auditTypes(uid)).toContain("totp_removed");
    await smtp.waitFor(
      (m) => m.to.includes(address) && mailText(m).includes("The authenticator app was removed"),
    );
  });

  it("step-up: VerifyFactor SENSITIVE_ACTION answers an action proof that ChangePassword accepts where one is required", async () => {
    const w = (await admin.createWorkspace({ name: "Proofs", slug: `proofs-${++n}` }, asAdmin()))
      .workspace?.id as string;
    await setting(w, { email_verification: "off" });
    const address = await account("step-up", w);
    const token = await signIn(address, w);
    const { secret } = await withApp(token);
    await setting(w, { email_verification: "off", action_proof_required: true });
    const denied = await failure(
      auth.changePassword(
        { currentPassword: password, newPassword: "another long passphrase" },
        bearer(token),
      ),
    );
    expect(denied.reason).toBe("ACTION_PROOF_REQUIRED");
    const proof = await proofVia(token, secret);
    await auth.changePassword(
      { currentPassword: password, newPassword: "another long passphrase", actionProof: proof },
      bearer(token),
    );
    const res = await auth.login({
      email: address,
      password: "another long passphrase",
      workspaceId: w,
    });
    expect(res.result.case).toBe("pendingLogin");
  });
});

describe("SECURITY.md 40: recovery codes are keyed hashes, shown once, single use under concurrency, regenerated as a whole set, and every use is audited and mailed", () => {
  it("ten codes, stored as keyed hashes; each finishes one login, once; each use is audited and mailed", async () => {
    const address = await account("recovery");
    const uid = await userId(address);
    const { recoveryCodes } = await withApp(await signIn(address));
    expect(recoveryCodes).toHaveLength(10);
    expect(new Set(recoveryCodes).size).toBe(10);
    for (const c of recoveryCodes)
      expect(c).toMatch(/^[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{2}$/);

    const rows = await keygate.database.pool.any(sql.type(
      z.object({ code_hash: z.instanceof(Buffer), whole: z.string() }),
    )`
      SELECT code_hash, r::text AS whole FROM recovery_codes r WHERE workspace_id = ${ws} AND user_id = ${uid}`);
    expect(rows).toHaveLength(10);
    for (const c of recoveryCodes) {
      const plain = c.replace(/-/g, "");
      for (const r of rows) {
        expect(r.whole as string).not.toContain(plain);
        expect((r.code_hash as Buffer).equals(createHash("sha256").update(c).digest())).toBe(false);
        expect((r.code_hash as Buffer).equals(createHash("sha256").update(plain).digest())).toBe(
          false,
        );
      }
    }

    const [first, second] = recoveryCodes as [string, string];
    const pending = (await pendingId(address)).pendingLoginId;
    const done = await secondStep(pending, { case: "recoveryCode", value: first });
    const tokens = done.result.value as { amr: string[]; acr: string };
    expect(tokens.amr).toEqual(["pwd", "otp", "mfa"]);
    expect(tokens.acr).toBe("2");
    const again = (await pendingId(address)).pendingLoginId;
    expect((await failure(secondStep(again, { case: "recoveryCode", value: first }))).reason).toBe(
      "CODE_INVALID",
    );
    // As typed by a person: upper case, spaces, no hyphens.
    const typed = second.replace(/-/g, " ").toUpperCase();
    expect((await secondStep(again, { case: "recoveryCode", value: typed })).result.case).toBe(
      "tokens",
    );

    expect((await auditTypes(uid)).filter((t) => t === "recovery_code_used")).toHaveLength(2);
    await smtp.waitFor(() => mailsSaying(address, "A recovery code was used").length >= 2);
    expect(mailsSaying(address, "A recovery code was used")).toHaveLength(2);
    for (const m of smtp.received.filter((m) => m.to.includes(address))) {
      for (const c of recoveryCodes) expect(mailText(m)).not.toContain(c);
    }
    const token = await signIn(address).catch(() => undefined);
    expect(token).toBeUndefined();
  });

  it("regeneration needs an action proof and a factor, answers ten new codes once, and kills the whole old set", async () => {
    const bare = await account("no-factor");
    const bareToken = await signIn(bare);
    const none = await failure(factors.regenerateRecoveryCodes({}, bearer(bareToken)));
    expect(none.code).toBe(Code.FailedPrecondition);
    expect(none.reason).toBe("FACTOR_REQUIRED");

    const address = await account("regenerate");
    const uid = await userId(address);
    const token = await signIn(address);
    const { secret, recoveryCodes: old } = await withApp(token);
    expect((await failure(factors.regenerateRecoveryCodes({}, bearer(token)))).reason).toBe(
      "ACTION_PROOF_REQUIRED",
    );
    const fresh = (
      await factors.regenerateRecoveryCodes(
        { actionProof: await proofVia(token, secret) },
        bearer(token),
      )
    ).recoveryCodes;
    expect(fresh).toHaveLength(10);
    expect(fresh.filter((c) => old.includes(c))).toEqual([]);
    expect((await factors.listFactors({}, bearer(token))).recoveryCodesLeft).toBe(10);
    const recover = (code: string) =>
      factors.verifyFactor(
        { purpose: FactorPurpose.SENSITIVE_ACTION, factor: { case: "recoveryCode", value: code } },
        bearer(token),
      );
    for (const c of old.slice(0, 3))
      expect((await failure(recover(c))).reason).toBe("CODE_INVALID");
    expect((await recover(fresh[0] as string)).result.case).toBe("actionProof");
    expect((await factors.listFactors({}, bearer(token))).recoveryCodesLeft).toBe(9);
    expect(await auditTypes(uid)).toContain("recovery_codes_generated");
    await smtp.waitFor(
      (m) => m.to.includes(address) && mailText(m).includes("New recovery codes were made"),
    );
  });

  it("ten concurrent uses of one code: exactly one succeeds, audited and mailed once", async () => {
    const address = await account("recovery-race");
    const uid = await userId(address);
    const token = await signIn(address);
    const { recoveryCodes } = await withApp(token);
    const code = recoveryCodes[0] as string;
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, () =>
        factors.verifyFactor(
          {
            purpose: FactorPurpose.SENSITIVE_ACTION,
            factor: { case: "recoveryCode", value: code },
          },
          bearer(token),
        ),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results) {
      if (r.status === "rejected")
        expect((await failure(Promise.reject(r.reason))).reason).toBe("CODE_INVALID");
    }
    const types = await auditTypes(uid);
    expect(types.filter((t) => t === "recovery_code_used")).toHaveLength(1);
    expect(types.filter((t) => t === "factor_failed")).toHaveLength(9);
    await smtp.waitFor(() => mailsSaying(address, "A recovery code was used").length >= 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(mailsSaying(address, "A recovery code was used")).toHaveLength(1);
    expect((await factors.listFactors({}, bearer(token))).recoveryCodesLeft).toBe(9);
  });

  it("concurrent codes racing for one pending login: one finishes it, the others' codes stay unused", async () => {
    const address = await account("pending-race");
    const { recoveryCodes } = await withApp(await signIn(address));
    const pending = (await pendingId(address)).pendingLoginId;
    const results = await Promise.allSettled(
      recoveryCodes.map((c) => secondStep(pending, { case: "recoveryCode", value: c })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results) {
      if (r.status === "rejected") {
        const f = await failure(Promise.reject(r.reason));
        expect([Code.NotFound, Code.Unauthenticated]).toContain(f.code);
      }
    }
    const left = await keygate.database.pool.one(sql.type(z.object({ n: z.number() }))`
      SELECT count(*)::int AS n FROM recovery_codes r JOIN users u ON u.id = r.user_id
      WHERE u.email = ${address} AND r.used_at IS NULL`);
    expect(left.n).toBe(9);
  });
});

describe("FactorService input", () => {
  it("VerifyFactor names the field that is wrong", async () => {
    const noPurpose = await failure(
      factors.verifyFactor({ factor: { case: "totpCode", value: "123456" } }),
    );
    expect(noPurpose.code).toBe(Code.InvalidArgument);
    expect(noPurpose.fields).toContain("purpose");
    const passkey = await failure(
      factors.verifyFactor({
        purpose: FactorPurpose.PASSKEY_SIGN_IN,
        factor: { case: "totpCode", value: "123456" },
      }),
    );
    expect(passkey.fields).toContain("purpose");
    const noFactor = await failure(
      factors.verifyFactor({
        purpose: FactorPurpose.LOGIN_SECOND_STEP,
        pendingLoginId: randomUUID(),
      }),
    );
    expect(noFactor.fields).toContain("factor");
    expect(
      (
        await failure(
          factors.verifyFactor({
            purpose: FactorPurpose.SENSITIVE_ACTION,
            factor: { case: "totpCode", value: "123456" },
          }),
        )
      ).code,
    ).toBe(Code.Unauthenticated);
    expect(
      (await failure(secondStep(randomUUID(), { case: "totpCode", value: "123456" }))).code,
    ).toBe(Code.NotFound);
    expect(
      (await failure(secondStep("not-a-uuid", { case: "totpCode", value: "123456" }))).code,
    ).toBe(Code.NotFound);
  });

  it("empty, oversized and mistyped Connect JSON never gets a 500", async () => {
    const address = await account("fuzz");
    const token = await signIn(address);
    const methods = [
      "EnrollTotp",
      "ConfirmTotp",
      "RemoveTotp",
      "RegenerateRecoveryCodes",
      "VerifyFactor",
      "ListFactors",
    ];
    const bodies: unknown[] = [
      {},
      null,
      [],
      "text",
      42,
      { code: "9".repeat(100_000) },
      { code: 123456 },
      { code: ["123456"] },
      { pendingLoginId: "x".repeat(10_000) },
      { pendingLoginId: randomUUID(), code: "123456" },
      { purpose: "FACTOR_PURPOSE_LOGIN_SECOND_STEP", pendingLoginId: randomUUID(), totpCode: "" },
      { purpose: "nope", totpCode: {} },
      { purpose: 99, recoveryCode: "a".repeat(70_000) },
      { purpose: "FACTOR_PURPOSE_SENSITIVE_ACTION", totpCode: "12345\u0000" },
      { purpose: 3, totpCode: "123456", recoveryCode: "abcd-efgh-jk" },
      { actionProof: `kga_${"A".repeat(43)}` },
      { actionProof: 7 },
    ];
    const call = async (method: string, body: string, signedIn: boolean) => {
      const res = await fetch(`${keygate.url}/keygate.v1.FactorService/${method}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(signedIn ? { authorization: `Bearer ${token}` } : {}),
        },
        body,
      });
      const text = await res.text();
      expect(res.status, `${method} ${body.slice(0, 80)}: ${text.slice(0, 200)}`).not.toBe(500);
      if (res.status !== 200) {
        expect(JSON.parse(text).code, `${method} ${body.slice(0, 80)}`).not.toBe("internal");
      }
    };
    for (const method of methods) {
      for (const body of bodies) {
        for (const signedIn of [false, true]) await call(method, JSON.stringify(body), signedIn);
      }
    }
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...methods),
        fc.dictionary(
          fc.constantFrom(
            "code",
            "pendingLoginId",
            "actionProof",
            "purpose",
            "totpCode",
            "recoveryCode",
          ),
          fc.oneof(fc.string({ maxLength: 80 }), fc.integer(), fc.boolean()),
        ),
        fc.boolean(),
        async (method, body, signedIn) => call(method, JSON.stringify(body), signedIn),
      ),
      { numRuns: 60 },
    );
  });
});
