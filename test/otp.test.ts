import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OtpService } from "../gen/keygate/v1/otp_service_pb.js";
import { OtpPurpose } from "../gen/keygate/v1/types_pb.js";
import { ManualClock } from "../src/clock.js";
import { rateLimitNames } from "../src/config.js";
import { sql } from "../src/db/sql.js";
import { failure } from "./support/failure.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { codeIn, startSmtpServer } from "./support/smtp.js";

const clock = new ManualClock();
let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let otp: ReturnType<typeof createClient<typeof OtpService>>;
let ws: string;
const password = "correct horse battery staple";
let n = 0;
const email = (tag: string) => `${tag}-${++n}@example.test`;

beforeAll(async () => {
  smtp = await startSmtpServer();
  const generous = Object.fromEntries(
    rateLimitNames.map((r) => [r, { limit: 100_000, window_seconds: 60 }]),
  );
  keygate = await startTestKeygate(
    {
      KEYGATE_SMTP_URL: smtp.url,
      // The real OTP send limit; the others stay out of the way.
      KEYGATE_RATE_LIMITS: JSON.stringify({
        ...generous,
        otp_send_address: { limit: 3, window_seconds: 600 },
      }),
      KEYGATE_WORKSPACE_DEFAULTS: JSON.stringify({
        email_verification: "off",
        passwordless_otp: true,
      }),
    },
    { clock },
  );
  ws = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  auth = createClient(AuthService, transport);
  otp = createClient(OtpService, transport);
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

const mailsTo = (address: string) => smtp.received.filter((m) => m.to.includes(address));
async function nextCode(address: string, after: number): Promise<string> {
  const mail = await smtp.waitFor(
    (m) => m.to.includes(address) && mailsTo(address).indexOf(m) >= after,
  );
  return codeIn(mail);
}
async function account(tag: string) {
  const address = email(tag);
  await auth.signUp({ email: address, password }, { headers: { "x-workspace-id": ws } });
  return address;
}
async function setting(json: object) {
  await keygate.database.pool.query(sql.unsafe`
    UPDATE workspaces SET settings = ${sql.jsonb(json as Record<string, string>)} WHERE id = ${ws}`);
}

describe("second login step", () => {
  it("a workspace that requires it answers a pending login; VerifyOtp completes it with tokens", async () => {
    const address = await account("second");
    await setting({ otp_login: "required" });
    try {
      const res = await auth.login({ email: address, password, workspaceId: ws });
      expect(res.result.case).toBe("pendingLogin");
      const pending = res.result.value as { pendingLoginId: string; purpose: OtpPurpose };
      expect(pending.purpose).toBe(OtpPurpose.LOGIN_SECOND_STEP);
      const first = await nextCode(address, 0);
      // A resend replaces the first code.
      await otp.sendOtp({
        purpose: OtpPurpose.LOGIN_SECOND_STEP,
        pendingLoginId: pending.pendingLoginId,
      });
      const second = await nextCode(address, 1);
      if (second !== first) {
        const old = await failure(
          otp.verifyOtp({
            purpose: OtpPurpose.LOGIN_SECOND_STEP,
            pendingLoginId: pending.pendingLoginId,
            code: first,
          }),
        );
        expect(old.reason).toBe("CODE_INVALID");
      }
      const done = await otp.verifyOtp({
        purpose: OtpPurpose.LOGIN_SECOND_STEP,
        pendingLoginId: pending.pendingLoginId,
        code: second,
      });
      expect(done.result.case).toBe("tokens");
      const tokens = done.result.value as { accessToken: string };
      expect(
        (await auth.getSession({}, { headers: { authorization: `Bearer ${tokens.accessToken}` } }))
          .user?.email,
      ).toBe(address);
      // Completed: the pending login is gone.
      expect(
        (
          await failure(
            otp.verifyOtp({
              purpose: OtpPurpose.LOGIN_SECOND_STEP,
              pendingLoginId: pending.pendingLoginId,
              code: second,
            }),
          )
        ).code,
      ).toBe(Code.NotFound);
    } finally {
      await setting({});
    }
  });

  it("optional: only users who opted in get the step", async () => {
    const plain = await account("optional-plain");
    const opted = await account("optional-in");
    await keygate.database.pool.query(
      sql.unsafe`UPDATE users SET otp_login_opt_in = true WHERE email = ${opted}`,
    );
    await setting({ otp_login: "optional" });
    try {
      expect((await auth.login({ email: plain, password, workspaceId: ws })).result.case).toBe(
        "tokens",
      );
      expect((await auth.login({ email: opted, password, workspaceId: ws })).result.case).toBe(
        "pendingLogin",
      );
    } finally {
      await setting({});
    }
  });
});

describe("codes", () => {
  it("signs in without a password where the workspace allows it, and answers the same for unknown addresses", async () => {
    const address = await account("passwordless");
    const known = await fetch(`${keygate.url}/keygate.v1.OtpService/SendOtp`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        purpose: "OTP_PURPOSE_PASSWORDLESS_SIGN_IN",
        email: address,
        workspaceId: ws,
      }),
    });
    const unknown = await fetch(`${keygate.url}/keygate.v1.OtpService/SendOtp`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        purpose: "OTP_PURPOSE_PASSWORDLESS_SIGN_IN",
        email: email("ghost"),
        workspaceId: ws,
      }),
    });
    expect(unknown.status).toBe(known.status);
    expect(await unknown.text()).toBe(await known.text());
    const code = await nextCode(address, 0);
    const res = await otp.verifyOtp({
      purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
      email: address,
      workspaceId: ws,
      code,
    });
    expect(res.result.case).toBe("tokens");
  });

  it("SECURITY.md 14: a code is bound to its purpose", async () => {
    const address = await account("bound");
    await otp.sendOtp({
      purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
      email: address,
      workspaceId: ws,
    });
    const code = await nextCode(address, 0);
    await setting({ email_verification: "code", passwordless_otp: true });
    try {
      const f = await failure(
        otp.verifyOtp({
          purpose: OtpPurpose.EMAIL_VERIFICATION,
          email: address,
          workspaceId: ws,
          code,
        }),
      );
      expect(f.reason).toBe("CODE_INVALID");
    } finally {
      await setting({});
    }
    expect(
      (
        await otp.verifyOtp({
          purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
          email: address,
          workspaceId: ws,
          code,
        })
      ).result.case,
    ).toBe("tokens");
  });

  it("SECURITY.md 13: a code expires after the workspace's lifetime (five minutes by default)", async () => {
    const address = await account("expire");
    await otp.sendOtp({
      purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
      email: address,
      workspaceId: ws,
    });
    const code = await nextCode(address, 0);
    clock.advance(301_000);
    const f = await failure(
      otp.verifyOtp({
        purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
        email: address,
        workspaceId: ws,
        code,
      }),
    );
    expect(f.reason).toBe("CODE_INVALID");
  });

  it("SECURITY.md 15, 18: five wrong tries kill a code; a fourth send in ten minutes is refused", async () => {
    clock.advance(601_000);
    const address = await account("tries");
    await otp.sendOtp({
      purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
      email: address,
      workspaceId: ws,
    });
    const code = await nextCode(address, 0);
    const wrong = code === "123456" ? "654321" : "123456";
    for (let i = 0; i < 5; i++) {
      await failure(
        otp.verifyOtp({
          purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
          email: address,
          workspaceId: ws,
          code: wrong,
        }),
      );
    }
    const right = await failure(
      otp.verifyOtp({
        purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
        email: address,
        workspaceId: ws,
        code,
      }),
    );
    expect(right.reason).toBe("CODE_INVALID");
    await otp.sendOtp({
      purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
      email: address,
      workspaceId: ws,
    });
    await otp.sendOtp({
      purpose: OtpPurpose.PASSWORDLESS_SIGN_IN,
      email: address,
      workspaceId: ws,
    });
    const fourth = await failure(
      otp.sendOtp({ purpose: OtpPurpose.PASSWORDLESS_SIGN_IN, email: address, workspaceId: ws }),
    );
    expect(fourth).toMatchObject({ code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
  });
});

describe("email verification by code", () => {
  it("verifies the signed-in caller's own address", async () => {
    clock.advance(601_000);
    const address = await account("verify");
    const login = await auth.login({ email: address, password, workspaceId: ws });
    const bearer = {
      headers: {
        authorization: `Bearer ${(login.result.value as { accessToken: string }).accessToken}`,
      },
    };
    await setting({ email_verification: "code" });
    try {
      await otp.sendOtp({ purpose: OtpPurpose.EMAIL_VERIFICATION }, bearer);
      const code = await nextCode(address, 0);
      const res = await otp.verifyOtp({ purpose: OtpPurpose.EMAIL_VERIFICATION, code }, bearer);
      expect(res.result).toEqual({ case: "emailVerified", value: true });
      expect((await auth.getSession({}, bearer)).user?.emailVerified).toBe(true);
    } finally {
      await setting({});
    }
  });
});

describe("sensitive actions", () => {
  it("ChangePassword needs a fresh action proof where the workspace asks for one", async () => {
    clock.advance(601_000);
    const address = await account("sensitive");
    const login = await auth.login({ email: address, password, workspaceId: ws });
    const bearer = {
      headers: {
        authorization: `Bearer ${(login.result.value as { accessToken: string }).accessToken}`,
      },
    };
    await setting({ action_proof_required: true });
    try {
      const without = await failure(
        auth.changePassword(
          { currentPassword: password, newPassword: "brand new passphrase" },
          bearer,
        ),
      );
      expect(without).toMatchObject({
        code: Code.PermissionDenied,
        reason: "ACTION_PROOF_REQUIRED",
      });
      expect((await failure(otp.sendOtp({ purpose: OtpPurpose.SENSITIVE_ACTION }))).code).toBe(
        Code.Unauthenticated,
      );
      await otp.sendOtp({ purpose: OtpPurpose.SENSITIVE_ACTION }, bearer);
      const code = await nextCode(address, 0);
      const res = await otp.verifyOtp({ purpose: OtpPurpose.SENSITIVE_ACTION, code }, bearer);
      expect(res.result.case).toBe("actionProof");
      const proof = (res.result.value as { proof: string }).proof;
      await auth.changePassword(
        { currentPassword: password, newPassword: "brand new passphrase", actionProof: proof },
        bearer,
      );
      const again = await failure(
        auth.changePassword(
          {
            currentPassword: "brand new passphrase",
            newPassword: "yet another passphrase",
            actionProof: proof,
          },
          bearer,
        ),
      );
      expect(again.reason).toBe("ACTION_PROOF_REQUIRED");
    } finally {
      await setting({});
    }
  });
});
