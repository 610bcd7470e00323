import { randomBytes } from "node:crypto";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { FactorPurpose, FactorService } from "../gen/keygate/v1/factor_service_pb.js";
import { OtpService } from "../gen/keygate/v1/otp_service_pb.js";
import { MfaMode, OtpPurpose, Role } from "../gen/keygate/v1/types_pb.js";
import { ManualClock } from "../src/clock.js";
import { configFromEnv, rateLimitNames } from "../src/config.js";
import { sql } from "../src/db/sql.js";
import { failure } from "./support/failure.js";
import { bearer } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { codeIn, startSmtpServer } from "./support/smtp.js";
import { SoftAuthenticator, type SoftCredential } from "./support/soft-authenticator.js";

// FactorService's passkeys, driven over Connect with a software authenticator: registration,
// username-less sign-in, the second step, sensitive actions, and every way an answer can be
// wrong (SECURITY.md 41).

const rpId = "login.example.test";
const origin = `https://${rpId}`;
const clock = new ManualClock();
let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let factors: ReturnType<typeof createClient<typeof FactorService>>;
let otp: ReturnType<typeof createClient<typeof OtpService>>;
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
      KEYGATE_WEBAUTHN_RP_ID: rpId,
      KEYGATE_WEBAUTHN_ORIGINS: `${origin},https://app.${rpId}`,
      KEYGATE_WORKSPACE_DEFAULTS: JSON.stringify({ email_verification: "off" }),
    },
    { clock },
  );
  ws = keygate.bootstrapped?.workspaceId as string;
  adminKey = keygate.bootstrapped?.adminKey as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  auth = createClient(AuthService, transport);
  factors = createClient(FactorService, transport);
  otp = createClient(OtpService, transport);
  admin = createClient(AdminService, transport);
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

async function workspace(tag: string, settings: Record<string, unknown> = {}) {
  const res = await admin.createWorkspace(
    { name: `Workspace ${tag}`, slug: `${tag}-${++n}`, settings },
    asAdmin(),
  );
  return res.workspace?.id as string;
}

/** Adds the (proven) account to another workspace, as a deployment admin does. */
async function provision(address: string, workspaceId: string) {
  const { users } = await admin.listUsers({ emailPrefix: address }, asAdmin());
  await admin.markEmailVerified({ userId: users[0]?.id as string }, asAdmin());
  await admin.provisionUser(
    { email: address, workspaceId, role: Role.MEMBER, password: "" },
    asAdmin(),
  );
}

/** A member signed in with the password, in `workspaceId` (the default one unless given). */
async function member(tag: string, workspaceId = ws) {
  const address = email(tag);
  await auth.signUp({ email: address, password }, { headers: { "x-workspace-id": ws } });
  if (workspaceId !== ws) await provision(address, workspaceId);
  return { address, token: await signIn(address, workspaceId) };
}

async function signIn(address: string, workspaceId: string) {
  const res = await auth.login({ email: address, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error(`expected tokens, got ${res.result.case}`);
  return res.result.value.accessToken;
}

async function register(token: string, authenticator: SoftAuthenticator, name = "") {
  const begin = await factors.beginPasskeyRegistration({}, bearer(token));
  const made = authenticator.register(begin.options as never);
  const res = await factors.finishPasskeyRegistration(
    { credential: made.json as never, name },
    bearer(token),
  );
  return { res, credential: made.credential, options: begin.options as Record<string, never> };
}

const beginSignIn = (workspaceId = ws, headers: Record<string, string> = {}) =>
  factors
    .beginPasskeyAuthentication(
      { purpose: FactorPurpose.PASSKEY_SIGN_IN, workspaceId },
      { headers },
    )
    .then((r) => r.options as never as { challenge: string; rpId: string });

const finishSignIn = (credential: unknown, workspaceId = ws) =>
  factors.finishPasskeyAuthentication({
    purpose: FactorPurpose.PASSKEY_SIGN_IN,
    credential: credential as never,
    workspaceId,
  });

async function signInWith(
  authenticator: SoftAuthenticator,
  workspaceId = ws,
  pick?: SoftCredential,
) {
  const options = await beginSignIn(workspaceId);
  const res = await finishSignIn(authenticator.assert(options, {}, pick), workspaceId);
  if (res.result.case !== "tokens") throw new Error("expected tokens");
  return res.result.value;
}

async function actionProof(token: string, address: string) {
  const seen = smtp.received.filter((m) => m.to.includes(address)).length;
  await otp.sendOtp({ purpose: OtpPurpose.SENSITIVE_ACTION }, bearer(token));
  const hasCode = (m: Parameters<typeof codeIn>[0]) => {
    try {
      return codeIn(m) !== "";
    } catch {
      return false;
    }
  };
  const mail = await smtp.waitFor(
    (m) =>
      m.to.includes(address) &&
      smtp.received.filter((r) => r.to.includes(address)).indexOf(m) >= seen &&
      hasCode(m),
  );
  const res = await otp.verifyOtp(
    { purpose: OtpPurpose.SENSITIVE_ACTION, code: codeIn(mail) },
    bearer(token),
  );
  return (res.result.value as { proof: string }).proof;
}

/** An action proof from a passkey of the signed-in member (SENSITIVE_ACTION). */
async function passkeyProof(token: string, authenticator: SoftAuthenticator): Promise<string> {
  const begin = await factors.beginPasskeyAuthentication(
    { purpose: FactorPurpose.SENSITIVE_ACTION },
    bearer(token),
  );
  const res = await factors.finishPasskeyAuthentication(
    {
      purpose: FactorPurpose.SENSITIVE_ACTION,
      credential: authenticator.assert({ ...(begin.options as object), rpId } as never) as never,
    },
    bearer(token),
  );
  if (res.result.case !== "actionProof") throw new Error("expected an action proof");
  return res.result.value.proof;
}

const auditTypes = async (type: string) =>
  keygate.database.pool.any(
    sql.unsafe`SELECT user_id, details FROM audit_events WHERE type = ${type}`,
  ) as Promise<readonly { user_id: string | null; details: Record<string, unknown> }[]>;

describe("configuration", () => {
  it("takes the RP ID and origins from settings, defaulting from the public URL", () => {
    const own = configFromEnv({ KEYGATE_PUBLIC_URL: "https://id.example.test/ui" });
    expect(own.webauthn).toEqual({
      rpId: "id.example.test",
      origins: ["https://id.example.test"],
    });
    const set = configFromEnv({
      KEYGATE_PUBLIC_URL: "https://id.example.test",
      KEYGATE_WEBAUTHN_RP_ID: "example.test",
      KEYGATE_WEBAUTHN_ORIGINS: "https://id.example.test, https://app.example.test:8443",
    });
    expect(set.webauthn).toEqual({
      rpId: "example.test",
      origins: ["https://id.example.test", "https://app.example.test:8443"],
    });
    expect(() =>
      configFromEnv({
        KEYGATE_WEBAUTHN_RP_ID: "example.test",
        KEYGATE_WEBAUTHN_ORIGINS: "https://evil.test",
      }),
    ).toThrow(/KEYGATE_WEBAUTHN_ORIGINS/);
    expect(() => configFromEnv({ KEYGATE_WEBAUTHN_ORIGINS: "https://x.test/path" })).toThrow(
      /KEYGATE_WEBAUTHN_ORIGINS/,
    );
    expect(() => configFromEnv({ KEYGATE_WEBAUTHN_RP_ID: "https://x.test" })).toThrow(
      /KEYGATE_WEBAUTHN_RP_ID/,
    );
  });
});

describe("registration", () => {
  it("asks for a discoverable credential under the membership's random handle, excluding its passkeys", async () => {
    const { address, token } = await member("reg");
    const device = new SoftAuthenticator(origin);
    const first = await register(token, device, "Laptop");
    const options = first.options as unknown as {
      rp: { id: string };
      user: { id: string; name: string };
      authenticatorSelection: { residentKey: string; userVerification: string };
      attestation: string;
      excludeCredentials: unknown[];
      timeout: number;
    };
    expect(options.rp.id).toBe(rpId);
    expect(options.user.name).toBe(address);
    expect(options.authenticatorSelection).toMatchObject({
      residentKey: "required",
      userVerification: "preferred",
    });
    expect(options.attestation).toBe("none");
    expect(options.excludeCredentials).toEqual([]);
    expect(options.timeout).toBe(300_000);
    const userId = decodeJwt(token).sub as string;
    const handle = Buffer.from(options.user.id, "base64url");
    expect(handle.length).toBe(32);
    expect(handle.toString("hex")).not.toContain(userId.replaceAll("-", ""));
    expect(first.res.passkey?.name).toBe("Laptop");
    expect(first.res.passkey?.transports).toEqual(["internal"]);
    // The membership's first factor comes with its ten recovery codes; later ones do not.
    expect(first.res.recoveryCodes).toHaveLength(10);
    expect(new Set(first.res.recoveryCodes).size).toBe(10);
    expect(first.res.tokens).toBeUndefined();

    // The second registration excludes the first and keeps the same handle.
    const begin = await factors.beginPasskeyRegistration({}, bearer(token));
    const again = begin.options as unknown as typeof options;
    expect(again.user.id).toBe(options.user.id);
    expect(again.excludeCredentials).toEqual([
      {
        id: first.credential.id.toString("base64url"),
        type: "public-key",
        transports: ["internal"],
      },
    ]);
    expect(() => device.register(again as never)).toThrow(/excluded/);

    const listed = await factors.listFactors({}, bearer(token));
    expect(listed.passkeys.map((p) => p.name)).toEqual(["Laptop"]);
    expect(listed.recoveryCodesLeft).toBe(10);
    const second = await register(token, new SoftAuthenticator(origin), "Phone");
    expect(second.res.recoveryCodes).toEqual([]);
    // Audited and mailed.
    expect((await auditTypes("passkey_added")).some((e) => e.user_id === userId)).toBe(true);
    await smtp.waitFor((m) => m.to.includes(address) && m.raw.includes("A passkey was added"));
  });

  it("refuses an answer for another origin or RP ID, a replayed or an expired challenge", async () => {
    const { token } = await member("reg-bad");
    const device = new SoftAuthenticator(origin);
    const tryWith = async (bend: Parameters<SoftAuthenticator["register"]>[1]) => {
      const begin = await factors.beginPasskeyRegistration({}, bearer(token));
      const made = device.register(begin.options as never, bend);
      return failure(
        factors.finishPasskeyRegistration({ credential: made.json as never }, bearer(token)),
      );
    };
    for (const bend of [{ origin: "https://evil.test" }, { rpId: "evil.test" }]) {
      const f = await tryWith(bend);
      expect(f.code).toBe(Code.InvalidArgument);
      expect(f.reason).toBe("PASSKEY_INVALID");
    }
    // A spent challenge does not work again.
    const begin = await factors.beginPasskeyRegistration({}, bearer(token));
    const opts = begin.options as never as { challenge: string };
    await factors.finishPasskeyRegistration(
      { credential: device.register(opts as never).json as never },
      bearer(token),
    );
    const replay = await failure(
      factors.finishPasskeyRegistration(
        { credential: new SoftAuthenticator(origin).register(opts as never).json as never },
        bearer(token),
      ),
    );
    // Every refusal of a registration answers alike, the challenge's included.
    expect([replay.code, replay.reason]).toEqual([Code.InvalidArgument, "PASSKEY_INVALID"]);
    // Five minutes later the challenge is gone.
    const late = await factors.beginPasskeyRegistration({}, bearer(token));
    clock.advance(5 * 60_000 + 1);
    const expired = await failure(
      factors.finishPasskeyRegistration(
        {
          credential: new SoftAuthenticator(origin).register(late.options as never).json as never,
        },
        bearer(token),
      ),
    );
    expect([expired.code, expired.reason]).toEqual([Code.InvalidArgument, "PASSKEY_INVALID"]);
    // Another member's challenge is not this member's.
    const other = await member("reg-other");
    const theirs = await factors.beginPasskeyRegistration({}, bearer(other.token));
    const stolen = await failure(
      factors.finishPasskeyRegistration(
        {
          credential: new SoftAuthenticator(origin).register(theirs.options as never).json as never,
        },
        bearer(token),
      ),
    );
    expect(stolen.reason).toBe("PASSKEY_INVALID");
    expect((await factors.listFactors({}, bearer(token))).passkeys).toHaveLength(1);
  });

  it("stores only keys that can verify, under the id the authenticator made, and tells no one whose an id is", async () => {
    const { token } = await member("reg-keys");
    const device = new SoftAuthenticator(origin);
    const tryWith = async (
      bend: Parameters<SoftAuthenticator["register"]>[1],
      with_ = new SoftAuthenticator(origin),
    ) => {
      const begin = await factors.beginPasskeyRegistration({}, bearer(token));
      const made = with_.register(begin.options as never, bend);
      return failure(
        factors.finishPasskeyRegistration({ credential: made.json as never }, bearer(token)),
      );
    };
    const ec = (crv: number, x: Buffer, y: Buffer) =>
      new Map<never, never>([
        [1, 2],
        [3, -7],
        [-1, crv],
        [-2, x],
        [-3, y],
      ] as never);
    const unusable = [
      ec(99, Buffer.alloc(32, 1), Buffer.alloc(32, 2)), // no such curve
      ec(1, Buffer.alloc(32, 1), Buffer.alloc(32, 2)), // not a point on P-256
      new Map<never, never>([
        [1, 3],
        [3, -257],
        [-1, Buffer.from([0xc3, 0x5f, 0x01])],
        [-2, Buffer.from([1, 0, 1])],
      ] as never), // a 24-bit RSA modulus
      new Map<never, never>([
        [1, 1],
        [3, -8],
        [-1, 6],
        [-2, Buffer.alloc(5, 7)],
      ] as never), // a 5-byte Ed25519 key
    ];
    for (const coseKey of unusable) {
      const f = await tryWith({ coseKey });
      expect([f.code, f.reason]).toEqual([Code.InvalidArgument, "PASSKEY_INVALID"]);
    }
    // The JSON names another id than authenticatorData does.
    const renamed = await tryWith({ jsonId: randomBytes(32).toString("base64url") });
    expect(renamed.reason).toBe("PASSKEY_INVALID");
    expect((await factors.listFactors({}, bearer(token))).passkeys).toEqual([]);

    // Another member's credential id answers like any bad answer; the member's own, ALREADY_EXISTS.
    const other = await member("reg-keys-other");
    const otherDevice = new SoftAuthenticator(origin);
    const theirs = await register(other.token, otherDevice);
    const taken = await tryWith({ credentialId: theirs.credential.id });
    expect([taken.code, taken.reason]).toEqual([Code.InvalidArgument, "PASSKEY_INVALID"]);
    const mine = await register(token, device);
    const again = await tryWith({ credentialId: mine.credential.id });
    expect(again.code).toBe(Code.AlreadyExists);
    // The other member's passkey still signs in.
    const tokens = await signInWith(otherDevice);
    expect(tokens.userId).not.toBe("");
  });

  it("finishes a login that waits for a first factor, with the passkey's method in the tokens", async () => {
    const w = await workspace("enroll", { mfa: MfaMode.REQUIRED });
    const { address } = await member("enroll-m");
    await provision(address, w);
    const login = await auth.login({ email: address, password, workspaceId: w });
    expect(login.result.case).toBe("pendingLogin");
    const pending = login.result.value as { pendingLoginId: string; enrollmentRequired: boolean };
    expect(pending.enrollmentRequired).toBe(true);
    const device = new SoftAuthenticator(origin);
    const begin = await factors.beginPasskeyRegistration({
      pendingLoginId: pending.pendingLoginId,
    });
    const made = device.register(begin.options as never);
    const done = await factors.finishPasskeyRegistration({
      credential: made.json as never,
      pendingLoginId: pending.pendingLoginId,
    });
    expect(done.tokens?.amr).toEqual(["pwd", "hwk", "mfa"]);
    expect(done.tokens?.acr).toBe("phr");
    // The pending login is finished: a second enrollment with it is refused.
    expect(
      (await failure(factors.beginPasskeyRegistration({ pendingLoginId: pending.pendingLoginId })))
        .code,
    ).toBe(Code.NotFound);
    // Without a token or pending login: UNAUTHENTICATED.
    expect((await failure(factors.beginPasskeyRegistration({}))).code).toBe(Code.Unauthenticated);
  });
});

describe("SECURITY.md 41: passkeys", () => {
  it("SECURITY.md 41: a passkey signs in username-less with hwk or swk, mfa and acr phr", async () => {
    const { address, token } = await member("signin");
    const device = new SoftAuthenticator(origin);
    await register(token, device);
    const tokens = await signInWith(device);
    expect(tokens.amr).toEqual(["hwk", "mfa"]);
    expect(tokens.acr).toBe("phr");
    const claims = decodeJwt(tokens.accessToken);
    expect(claims.amr).toEqual(["hwk", "mfa"]);
    expect(claims.acr).toBe("phr");
    const me = await auth.getSession({}, bearer(tokens.accessToken));
    expect(me.user?.email).toBe(address);
    const events = await auditTypes("login_succeeded");
    expect(
      events.some((e) => e.details.method === "hwk" && e.details.flow === "passkey_sign_in"),
    ).toBe(true);

    const synced = new SoftAuthenticator(origin, { backedUp: true });
    const second = await member("signin-synced");
    const reg = await register(second.token, synced);
    expect(reg.res.passkey?.backedUp).toBe(true);
    const t2 = await signInWith(synced);
    expect(t2.amr).toEqual(["swk", "mfa"]);
    expect(t2.acr).toBe("phr");
    const listed = await factors.listFactors({}, bearer(t2.accessToken));
    expect(listed.passkeys[0]?.lastUseTime).toBeDefined();
  });

  it("SECURITY.md 41: the sign-in options are the same for every caller, and nobody is named in them", async () => {
    const { token } = await member("shape");
    await register(token, new SoftAuthenticator(origin));
    const anonymous = await beginSignIn();
    const signedIn = (
      await factors.beginPasskeyAuthentication(
        { purpose: FactorPurpose.PASSKEY_SIGN_IN, workspaceId: ws },
        bearer(token),
      )
    ).options as never as Record<string, unknown>;
    const byHeader = await factors.beginPasskeyAuthentication(
      { purpose: FactorPurpose.PASSKEY_SIGN_IN },
      { headers: { "x-workspace-id": ws } },
    );
    const strip = (o: object) => ({ ...o, challenge: "" });
    expect(strip(signedIn)).toEqual(strip(anonymous));
    expect(strip(byHeader.options as object)).toEqual(strip(anonymous));
    expect(anonymous).toEqual({
      challenge: expect.stringMatching(/^[A-Za-z0-9_-]{54}$/),
      rpId,
      timeout: 300_000,
      userVerification: "required",
      allowCredentials: [],
    });
    expect(anonymous.challenge).not.toBe((signedIn as { challenge: string }).challenge);
    // An unknown credential answers as any other refusal.
    const stranger = new SoftAuthenticator(origin);
    stranger.register({ challenge: "x", rp: { id: rpId }, user: { id: "AAAA", name: "x" } });
    const f = await failure(finishSignIn(stranger.assert(anonymous)));
    expect([f.code, f.reason]).toEqual([Code.Unauthenticated, "PASSKEY_INVALID"]);
  });

  it("SECURITY.md 41: an assertion for another origin or RP ID, or without user verification, is refused", async () => {
    const { token } = await member("bent");
    const device = new SoftAuthenticator(origin);
    await register(token, device);
    for (const bend of [
      { origin: "https://evil.test" },
      { origin: `http://${rpId}` },
      { rpId: "evil.test" },
      { uv: false },
      { type: "webauthn.create" },
      {
        signWith: new SoftAuthenticator(origin).register({
          challenge: "x",
          rp: { id: rpId },
          user: { id: "AAAA", name: "x" },
        }).credential.privateKey,
      },
    ]) {
      const options = await beginSignIn();
      const f = await failure(finishSignIn(device.assert(options, bend)));
      expect({ bend: Object.keys(bend), code: f.code, reason: f.reason }).toEqual({
        bend: Object.keys(bend),
        code: Code.Unauthenticated,
        reason: "PASSKEY_INVALID",
      });
    }
    // The second configured origin is accepted.
    const options = await beginSignIn();
    const ok = await finishSignIn(device.assert(options, { origin: `https://app.${rpId}` }));
    expect(ok.result.case).toBe("tokens");
  });

  it("SECURITY.md 41: a challenge works once, for five minutes, and only for its purpose", async () => {
    const { token } = await member("once");
    const device = new SoftAuthenticator(origin);
    await register(token, device);
    const options = await beginSignIn();
    const answer = device.assert(options);
    expect((await finishSignIn(answer)).result.case).toBe("tokens");
    const replay = await failure(finishSignIn(answer));
    expect([replay.code, replay.reason]).toEqual([Code.Unauthenticated, "PASSKEY_INVALID"]);
    // A fresh signature over the spent challenge is refused too.
    const again = await failure(finishSignIn(device.assert(options)));
    expect(again.reason).toBe("PASSKEY_INVALID");
    // Nor under another spelling of the same bytes: padding, or other unused low bits in the
    // last character (base64url decoders ignore both).
    const text = options.challenge;
    const last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".indexOf(
      text.slice(-1),
    );
    const sibling = `${text.slice(0, -1)}${"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 1]}`;
    expect(Buffer.from(sibling, "base64url").equals(Buffer.from(text, "base64url"))).toBe(true);
    for (const spelling of [`${text}=`, `${text}==`, sibling]) {
      const f = await failure(finishSignIn(device.assert({ ...options, challenge: spelling })));
      expect([spelling, f.code, f.reason]).toEqual([
        spelling,
        Code.Unauthenticated,
        "PASSKEY_INVALID",
      ]);
    }
    // A fresh challenge written another way is refused too, and stays good in its own spelling.
    const fresh = await beginSignIn();
    const padded = await failure(
      finishSignIn(device.assert({ ...fresh, challenge: `${fresh.challenge}=` })),
    );
    expect(padded.reason).toBe("PASSKEY_INVALID");
    expect((await finishSignIn(device.assert(fresh))).result.case).toBe("tokens");

    const late = await beginSignIn();
    clock.advance(5 * 60_000 + 1);
    const expired = await failure(finishSignIn(device.assert(late)));
    expect(expired.reason).toBe("PASSKEY_INVALID");

    // A registration challenge is no sign-in challenge.
    const reg = (await factors.beginPasskeyRegistration({}, bearer(token))).options as never as {
      challenge: string;
    };
    const crossed = await failure(finishSignIn(device.assert({ challenge: reg.challenge, rpId })));
    expect(crossed.reason).toBe("PASSKEY_INVALID");

    // Nothing is stored when a challenge is handed out, only when one is spent; and what the
    // browser holds cannot be extended or made up: expiry and binding are sealed into it.
    const spent = () =>
      keygate.database.pool.oneFirst(
        sql.unsafe`SELECT count(*)::int AS n FROM passkey_challenges`,
      ) as Promise<number>;
    const before = await spent();
    const handedOut = await Promise.all([beginSignIn(), beginSignIn(), beginSignIn()]);
    expect(await spent()).toBe(before);
    const sealed = Buffer.from(handedOut[0].challenge, "base64url");
    const extended = Buffer.from(sealed);
    extended.writeUIntBE(sealed.readUIntBE(2, 6) + 3_600_000, 2, 6);
    const madeUp = Buffer.concat([sealed.subarray(0, 24), Buffer.alloc(16)]);
    for (const forged of [extended, madeUp, sealed.subarray(8, 40)]) {
      const f = await failure(
        finishSignIn(device.assert({ ...handedOut[0], challenge: forged.toString("base64url") })),
      );
      expect([f.code, f.reason]).toEqual([Code.Unauthenticated, "PASSKEY_INVALID"]);
    }
    expect(await spent()).toBe(before);
    expect((await finishSignIn(device.assert(handedOut[0]))).result.case).toBe("tokens");
    expect(await spent()).toBe(before + 1);

    // Of concurrent answers to one challenge exactly one signs in.
    const shared = await beginSignIn();
    const racers = [device.assert(shared), device.assert(shared), device.assert(shared)];
    const outcomes = await Promise.allSettled(racers.map((r) => finishSignIn(r)));
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
  });

  it("SECURITY.md 41: a challenge one instance hands out works on another, and once across them", async () => {
    const { token } = await member("peer");
    const device = new SoftAuthenticator(origin);
    await register(token, device);
    const peer = await startPeerKeygate(keygate, {}, { clock });
    try {
      const peerFactors = createClient(
        FactorService,
        createConnectTransport({ baseUrl: peer.url, httpVersion: "2" }),
      );
      const finishOn = (client: typeof factors, credential: unknown) =>
        client.finishPasskeyAuthentication({
          purpose: FactorPurpose.PASSKEY_SIGN_IN,
          credential: credential as never,
          workspaceId: ws,
        });
      // Handed out here, answered on both instances at once: exactly one signs in.
      const answer = device.assert(await beginSignIn());
      const outcomes = await Promise.allSettled(
        [peerFactors, factors, peerFactors, factors].map((c) => finishOn(c, answer)),
      );
      expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
      // Handed out by the peer, answered here.
      const fromPeer = await peerFactors.beginPasskeyAuthentication({
        purpose: FactorPurpose.PASSKEY_SIGN_IN,
        workspaceId: ws,
      });
      const res = await finishOn(factors, device.assert(fromPeer.options as never));
      expect(res.result.case).toBe("tokens");
    } finally {
      await peer.stop();
    }
  });

  it("SECURITY.md 41: a signature counter that does not move forward is refused and audited", async () => {
    const { token } = await member("clone");
    const device = new SoftAuthenticator(origin);
    const { credential } = await register(token, device);
    await signInWith(device); // counter 1
    await signInWith(device); // counter 2
    const userId = decodeJwt(token).sub as string;
    for (const counter of [2, 1]) {
      const f = await failure(finishSignIn(device.assert(await beginSignIn(), { counter })));
      expect([f.code, f.reason]).toEqual([Code.Unauthenticated, "PASSKEY_INVALID"]);
    }
    const clones = (await auditTypes("passkey_clone_suspected")).filter(
      (e) => e.user_id === userId,
    );
    expect(clones).toHaveLength(2);
    expect(clones[0]?.details.reason).toBe("counter");
    // The real authenticator, whose counter moves on, still works.
    expect(credential.counter).toBe(2);
    expect((await signInWith(device)).amr).toContain("hwk");
    // An authenticator without a counter (always 0) is accepted.
    const counterless = new SoftAuthenticator(origin, { counterStep: 0 });
    const other = await member("counterless");
    await register(other.token, counterless);
    await signInWith(counterless);
    await signInWith(counterless);
  });

  it("SECURITY.md 41: a passkey of workspace A does not sign in to workspace B, even for the same account", async () => {
    const b = await workspace("other");
    const { address, token } = await member("cross", ws);
    const device = new SoftAuthenticator(origin);
    await register(token, device);
    await provision(address, b);
    const inB = await signIn(address, b);
    // B does not see A's passkey, nor can it delete it.
    expect((await factors.listFactors({}, bearer(inB))).passkeys).toEqual([]);
    const aPasskey = (await factors.listFactors({}, bearer(token))).passkeys[0]?.id as string;
    // B's member has no factor in B to confirm a deletion with; an emailed proof does not do.
    const del = await failure(
      factors.deletePasskey(
        { passkeyId: aPasskey, actionProof: await actionProof(inB, address) },
        bearer(inB),
      ),
    );
    expect([del.code, del.reason]).toEqual([Code.PermissionDenied, "ACTION_PROOF_REQUIRED"]);
    const ren = await failure(
      factors.renamePasskey({ passkeyId: aPasskey, name: "mine" }, bearer(inB)),
    );
    expect(ren.code).toBe(Code.NotFound);
    // A's credential answering B's challenge.
    const options = await beginSignIn(b);
    const f = await failure(finishSignIn(device.assert({ ...options, rpId }), b));
    expect([f.code, f.reason]).toEqual([Code.Unauthenticated, "PASSKEY_INVALID"]);
    // A's challenge, answered in B's name.
    const fromA = await beginSignIn(ws);
    const g = await failure(finishSignIn(device.assert(fromA), b));
    expect(g.reason).toBe("PASSKEY_INVALID");
    // In B the same authenticator gets a credential of its own, under another user handle.
    const regB = await register(inB, device);
    const handleA = device.credentials.find((c) => c !== regB.credential)?.userHandle;
    expect(regB.credential.userHandle.equals(handleA as Buffer)).toBe(false);
    const tokensB = await signInWith(device, b, regB.credential);
    expect(tokensB.workspaceId).toBe(b);
    // A session signed in with A's passkey alone proved nothing B takes: it cannot switch.
    const inA = await signInWith(
      device,
      ws,
      device.credentials.find((c) => c !== regB.credential),
    );
    const switched = await failure(
      auth.switchWorkspace({ workspaceId: b }, bearer(inA.accessToken)),
    );
    expect([switched.code, switched.reason]).toEqual([Code.PermissionDenied, "PERMISSION_DENIED"]);
  });

  it("with factors off in the workspace, no passkey check works, not even for an action proof", async () => {
    const w = await workspace("off-later");
    const { token } = await member("off-later", w);
    await register(token, new SoftAuthenticator(origin));
    await admin.updateWorkspaceSettings(
      { workspaceId: w, settings: { mfa: MfaMode.OFF } },
      asAdmin(),
    );
    const f = await failure(
      factors.beginPasskeyAuthentication(
        { purpose: FactorPurpose.SENSITIVE_ACTION },
        bearer(token),
      ),
    );
    expect([f.code, f.reason]).toEqual([Code.NotFound, "FLOW_DISABLED"]);
  });

  it("SECURITY.md 41: an answer refused after its signature checked out has still spent its challenge", async () => {
    const w = await workspace("verify-later");
    const address = email("verify-later");
    await auth.signUp({ email: address, password }, { headers: { "x-workspace-id": w } });
    const device = new SoftAuthenticator(origin);
    await register(await signIn(address, w), device);
    await admin.updateWorkspaceSettings(
      { workspaceId: w, settings: { requireEmailVerification: true } },
      asAdmin(),
    );
    const answer = device.assert(await beginSignIn(w));
    const unverified = await failure(finishSignIn(answer, w));
    expect([unverified.code, unverified.reason]).toEqual([
      Code.FailedPrecondition,
      "EMAIL_NOT_VERIFIED",
    ]);
    const replay = await failure(finishSignIn(answer, w));
    expect([replay.code, replay.reason]).toEqual([Code.Unauthenticated, "PASSKEY_INVALID"]);
    // What the refused answer began was undone: no session beside the password's, and the
    // counter stayed at the registration's.
    const [row] = (await keygate.database.pool.any(sql.unsafe`
      SELECT (SELECT count(*)::int FROM sessions WHERE workspace_id = ${w}) AS sessions,
             (SELECT sign_count::int FROM passkeys WHERE workspace_id = ${w}) AS counter`)) as {
      sessions: number;
      counter: number;
    }[];
    expect(row).toEqual({ sessions: 1, counter: 0 });
  });

  it("SECURITY.md 41: sign-in is off where the workspace turns it off, before any challenge", async () => {
    const off = await workspace("nopasskey", { passkeySignIn: false });
    const mfaOff = await workspace("nomfa", { mfa: MfaMode.OFF });
    for (const w of [off, mfaOff]) {
      const f = await failure(beginSignIn(w));
      expect([f.code, f.reason]).toEqual([Code.NotFound, "FLOW_DISABLED"]);
    }
    const unknown = await failure(beginSignIn("00000000-0000-4000-8000-000000000000"));
    expect(unknown.code).toBe(Code.NotFound);
  });
});

describe("second step and sensitive actions", () => {
  it("finishes a password login's factor step with the member's own passkey only", async () => {
    const { address, token } = await member("step");
    const device = new SoftAuthenticator(origin);
    const { credential } = await register(token, device);
    const other = await member("step-other");
    const otherDevice = new SoftAuthenticator(origin);
    await register(other.token, otherDevice);

    const login = await auth.login({ email: address, password, workspaceId: ws });
    expect(login.result.case).toBe("pendingLogin");
    const pendingLoginId = (login.result.value as { pendingLoginId: string }).pendingLoginId;
    const begin = (
      await factors.beginPasskeyAuthentication({
        purpose: FactorPurpose.LOGIN_SECOND_STEP,
        pendingLoginId,
      })
    ).options as never as { challenge: string; allowCredentials: { id: string }[] };
    expect(begin.allowCredentials.map((c) => c.id)).toEqual([credential.id.toString("base64url")]);
    // Another member's passkey does not finish it.
    const wrong = await failure(
      factors.finishPasskeyAuthentication({
        purpose: FactorPurpose.LOGIN_SECOND_STEP,
        pendingLoginId,
        credential: otherDevice.assert({ challenge: begin.challenge, rpId }) as never,
      }),
    );
    expect(wrong.reason).toBe("PASSKEY_INVALID");
    const again = (
      await factors.beginPasskeyAuthentication({
        purpose: FactorPurpose.LOGIN_SECOND_STEP,
        pendingLoginId,
      })
    ).options as never as { challenge: string };
    const done = await factors.finishPasskeyAuthentication({
      purpose: FactorPurpose.LOGIN_SECOND_STEP,
      pendingLoginId,
      credential: device.assert({ ...again, rpId }, { uv: false }) as never,
    });
    expect(done.result.case).toBe("tokens");
    const tokens = done.result.value as { amr: string[]; acr: string };
    expect(tokens.amr).toEqual(["pwd", "hwk", "mfa"]);
    expect(tokens.acr).toBe("phr");
  });

  it("answers an action proof for SENSITIVE_ACTION, which deletes a passkey; it stops working at once", async () => {
    const { token } = await member("delete");
    const one = new SoftAuthenticator(origin);
    const two = new SoftAuthenticator(origin, { backedUp: true });
    await register(token, one, "One");
    await register(token, two, "Two");
    await signInWith(one);
    await signInWith(two);
    const all = (await factors.listFactors({}, bearer(token))).passkeys;
    expect(all.map((p) => p.name).sort()).toEqual(["One", "Two"]);
    const listed = { passkeys: ["One", "Two"].map((name) => all.find((p) => p.name === name)) };

    const renamed = await factors.renamePasskey(
      { passkeyId: listed.passkeys[0]?.id as string, name: "  Work laptop " },
      bearer(token),
    );
    expect(renamed.passkey?.name).toBe("Work laptop");
    const badName = await failure(
      factors.renamePasskey(
        { passkeyId: listed.passkeys[0]?.id as string, name: "a\u202eb" },
        bearer(token),
      ),
    );
    expect([badName.code, badName.fields]).toEqual([Code.InvalidArgument, ["name"]]);

    const noProof = await failure(
      factors.deletePasskey({ passkeyId: listed.passkeys[0]?.id as string }, bearer(token)),
    );
    expect([noProof.code, noProof.reason]).toEqual([
      Code.PermissionDenied,
      "ACTION_PROOF_REQUIRED",
    ]);

    const begin = (
      await factors.beginPasskeyAuthentication(
        { purpose: FactorPurpose.SENSITIVE_ACTION },
        bearer(token),
      )
    ).options as never as { challenge: string; allowCredentials: { id: string }[] };
    expect(begin.allowCredentials).toHaveLength(2);
    const proved = await factors.finishPasskeyAuthentication(
      {
        purpose: FactorPurpose.SENSITIVE_ACTION,
        credential: two.assert({ ...begin, rpId }) as never,
      },
      bearer(token),
    );
    expect(proved.result.case).toBe("actionProof");
    const proof = (proved.result.value as { proof: string }).proof;
    await factors.deletePasskey(
      { passkeyId: listed.passkeys[0]?.id as string, actionProof: proof },
      bearer(token),
    );
    const gone = await failure(finishSignIn(one.assert(await beginSignIn())));
    expect(gone.reason).toBe("PASSKEY_INVALID");
    expect((await signInWith(two)).amr).toEqual(["swk", "mfa"]);
    // The proof was spent.
    const reused = await failure(
      factors.deletePasskey(
        { passkeyId: listed.passkeys[1]?.id as string, actionProof: proof },
        bearer(token),
      ),
    );
    expect(reused.reason).toBe("ACTION_PROOF_REQUIRED");
    expect((await auditTypes("passkey_removed")).length).toBeGreaterThan(0);
  });

  it("keeps the last factor where the workspace requires one", async () => {
    const w = await workspace("required", { mfa: MfaMode.REQUIRED });
    const { address } = await member("last");
    await provision(address, w);
    const login = await auth.login({ email: address, password, workspaceId: w });
    const pendingLoginId = (login.result.value as { pendingLoginId: string }).pendingLoginId;
    const device = new SoftAuthenticator(origin);
    const begin = await factors.beginPasskeyRegistration({ pendingLoginId });
    const done = await factors.finishPasskeyRegistration({
      pendingLoginId,
      credential: device.register(begin.options as never).json as never,
    });
    const token = done.tokens?.accessToken as string;
    const id = done.passkey?.id as string;
    // Changing factors takes a proof from a factor: the mailbox's does not do.
    const byMail = await failure(
      factors.deletePasskey(
        { passkeyId: id, actionProof: await actionProof(token, address) },
        bearer(token),
      ),
    );
    expect([byMail.code, byMail.reason]).toEqual([Code.PermissionDenied, "ACTION_PROOF_REQUIRED"]);
    const f = await failure(
      factors.deletePasskey(
        { passkeyId: id, actionProof: await passkeyProof(token, device) },
        bearer(token),
      ),
    );
    expect([f.code, f.reason]).toEqual([Code.FailedPrecondition, "FACTOR_REQUIRED"]);
    await register(token, new SoftAuthenticator(origin));
    await factors.deletePasskey(
      { passkeyId: id, actionProof: await passkeyProof(token, device) },
      bearer(token),
    );
    expect((await factors.listFactors({}, bearer(token))).passkeys).toHaveLength(1);
  });
});

describe("public passkey challenges", () => {
  it("are bounded per client across workspaces (RESOURCE_EXHAUSTED with the retry delay)", async () => {
    const limited = await startTestKeygate({
      KEYGATE_WEBAUTHN_RP_ID: rpId,
      KEYGATE_WEBAUTHN_ORIGINS: origin,
      KEYGATE_RATE_LIMITS: JSON.stringify({
        ...Object.fromEntries(
          rateLimitNames.map((r) => [r, { limit: 100_000, window_seconds: 60 }]),
        ),
        passkey_challenge_ip: { limit: 2, window_seconds: 600 },
      }),
    });
    try {
      const client = createClient(
        FactorService,
        createConnectTransport({ baseUrl: limited.url, httpVersion: "2" }),
      );
      const workspaceId = limited.bootstrapped?.workspaceId as string;
      const begin = () =>
        client.beginPasskeyAuthentication({ purpose: FactorPurpose.PASSKEY_SIGN_IN, workspaceId });
      await begin();
      await begin();
      const f = await failure(begin());
      expect([f.code, f.reason]).toEqual([Code.ResourceExhausted, "RATE_LIMITED"]);
      expect(f.error.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds).toBeGreaterThan(0n);
      // Not per workspace: naming another one does not reset the budget.
      const made = await createClient(
        AdminService,
        createConnectTransport({ baseUrl: limited.url, httpVersion: "2" }),
      ).createWorkspace(
        { name: "Other", slug: "other-limited" },
        bearer(limited.bootstrapped?.adminKey as string),
      );
      const other = await failure(
        client.beginPasskeyAuthentication({
          purpose: FactorPurpose.PASSKEY_SIGN_IN,
          workspaceId: made.workspace?.id as string,
        }),
      );
      expect(other.code).toBe(Code.ResourceExhausted);
      // Signed-in challenges are stored rows too: a session does not get around the budget.
      const auth = createClient(
        AuthService,
        createConnectTransport({ baseUrl: limited.url, httpVersion: "2" }),
      );
      const address = email("limited");
      await auth.signUp(
        { email: address, password },
        { headers: { "x-workspace-id": workspaceId } },
      );
      const login = await auth.login({ email: address, password, workspaceId });
      const token = (login.result.value as { accessToken: string }).accessToken;
      const signedIn = await failure(client.beginPasskeyRegistration({}, bearer(token)));
      expect(signedIn.code).toBe(Code.ResourceExhausted);
    } finally {
      await limited.stop();
    }
  });
});

describe("SECURITY.md 22: the passkey RPCs never answer INTERNAL", () => {
  it("malformed credentials answer INVALID_ARGUMENT with the field, random ones a deliberate code", async () => {
    const { token } = await member("fuzz");
    const bad = await failure(finishSignIn({ id: "x", type: "public-key" }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.fields).toContain("credential.rawId");
    const notJson = await failure(
      finishSignIn({
        id: "AAAA",
        rawId: "AAAA",
        type: "public-key",
        response: { clientDataJSON: "AAAA", authenticatorData: "AAAA", signature: "AAAA" },
      }),
    );
    expect(notJson.fields).toEqual(["credential.response.clientDataJSON"]);
    const noPurpose = await failure(factors.beginPasskeyAuthentication({ workspaceId: ws }));
    expect(noPurpose.fields).toEqual(["purpose"]);

    const json = fc.jsonValue({ maxDepth: 3 });
    const b64 = fc.base64String().map((s) => s.replace(/\+/g, "-").replace(/\//g, "_"));
    const credentialish = fc.oneof(
      json,
      fc.record({
        id: b64,
        rawId: b64,
        type: fc.constantFrom("public-key", "other"),
        response: fc.record({
          clientDataJSON: fc.oneof(
            b64,
            fc
              .record({ challenge: b64, type: fc.string(), origin: fc.string() })
              .map((o) => Buffer.from(JSON.stringify(o)).toString("base64url")),
          ),
          authenticatorData: b64,
          signature: b64,
          attestationObject: b64,
          userHandle: b64,
        }),
      }),
    );
    const allowed = new Set([
      Code.InvalidArgument,
      Code.Unauthenticated,
      Code.NotFound,
      Code.PermissionDenied,
    ]);
    await fc.assert(
      fc.asyncProperty(
        credentialish,
        fc.constantFrom(0, 1, 2, 3, 7).map((p) => p as FactorPurpose),
        fc.string({ maxLength: 40 }),
        fc.string({ maxLength: 120 }),
        async (credential, purpose, pending, name) => {
          const calls = [
            () =>
              factors.finishPasskeyAuthentication({
                purpose,
                credential: credential as never,
                pendingLoginId: pending,
                workspaceId: ws,
              }),
            () =>
              factors.finishPasskeyRegistration(
                { credential: credential as never, name },
                bearer(token),
              ),
            () =>
              factors.beginPasskeyAuthentication({
                purpose,
                pendingLoginId: pending,
                workspaceSlug: name,
              }),
            () => factors.renamePasskey({ passkeyId: pending, name }, bearer(token)),
            () => factors.deletePasskey({ passkeyId: pending, actionProof: name }, bearer(token)),
          ];
          for (const call of calls) {
            const r = await call().then(
              () => undefined,
              (e: unknown) => failure(Promise.reject(e)),
            );
            if (r && !allowed.has(r.code)) throw new Error(`${Code[r.code]}: ${r.error.message}`);
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
