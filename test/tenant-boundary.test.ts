import { toJson } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import {
  AdminKeyRole,
  MembershipSchema,
  MembershipStatus,
  OtpLoginMode,
  Role,
  UserSchema,
} from "../gen/keygate/v1/types_pb.js";
import { builtInRateLimits } from "../src/config.js";
import { failure } from "./support/failure.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { linkIn, startSmtpServer } from "./support/smtp.js";

// One account shared by workspaces, attacked as an outsider would: stock Connect clients, two
// instances on one database, the default login limits and a lockout after five failures.
let a: TestKeygate;
let b: TestKeygate;
let authA: ReturnType<typeof createClient<typeof AuthService>>;
let authB: ReturnType<typeof createClient<typeof AuthService>>;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let adminB: ReturnType<typeof createClient<typeof AdminService>>;
let adminKey: string;
let home: string;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;

const password = "correct horse battery staple";
let n = 0;
const email = (tag: string) => `${tag}-${++n}-${Date.now().toString(36)}@example.test`;
// Each call from its own client address (the instances trust the loopback proxy), so the
// per-IP limit stays out of the way of the per-account ones under test.
let host = 0;
const fromAnywhere = (extra: Record<string, string> = {}) => ({
  headers: { "x-forwarded-for": `198.51.${(++host >> 8) % 250}.${(host % 250) + 1}`, ...extra },
});
const bearer = (token: string) => fromAnywhere({ authorization: `Bearer ${token}` });
const asAdmin = () => ({ headers: { authorization: `Bearer ${adminKey}` } });

beforeAll(async () => {
  smtp = await startSmtpServer();
  const env = {
    KEYGATE_SMTP_URL: smtp.url,
    KEYGATE_RATE_LIMITS: JSON.stringify({
      ...builtInRateLimits,
      signup_ip: { limit: 1000, window_seconds: 3600 },
    }),
    KEYGATE_LOCKOUT_THRESHOLD: "5",
    KEYGATE_TRUSTED_PROXIES: "127.0.0.1",
  };
  a = await startTestKeygate(env);
  b = await startPeerKeygate(a, env);
  home = a.bootstrapped?.workspaceId as string;
  adminKey = a.bootstrapped?.adminKey as string;
  authA = createClient(AuthService, createConnectTransport({ baseUrl: a.url, httpVersion: "1.1" }));
  authB = createClient(AuthService, createConnectTransport({ baseUrl: b.url, httpVersion: "2" }));
  admin = createClient(AdminService, createConnectTransport({ baseUrl: a.url, httpVersion: "2" }));
  adminB = createClient(AdminService, createConnectTransport({ baseUrl: b.url, httpVersion: "2" }));
});
afterAll(async () => {
  await b?.stop();
  await a?.stop();
  await smtp?.stop();
});

async function workspace(tag: string, settings: Record<string, unknown> = {}) {
  const res = await admin.createWorkspace(
    { name: `Workspace ${tag}`, slug: `${tag}-${++n}-${Date.now().toString(36)}`, settings },
    asAdmin(),
  );
  return res.workspace?.id as string;
}

/**
 * An account signed up in the default workspace and provisioned into the others. A proven
 * account (the default: a deployment admin vouches for it) joins them as it is; an unproven
 * one's password does not open them (SECURITY.md 28).
 */
async function sharedAccount(tag: string, alsoIn: string[] = [], { proven = true } = {}) {
  const address = email(tag);
  await authA.signUp({ email: address, password }, fromAnywhere({ "x-workspace-id": home }));
  if (proven) {
    const { users } = await admin.listUsers({ emailPrefix: address }, asAdmin());
    await admin.markEmailVerified({ userId: users[0]?.id as string }, asAdmin());
  }
  for (const workspaceId of alsoIn) {
    await admin.provisionUser(
      { email: address, workspaceId, role: Role.MEMBER, password: proven ? "" : password },
      asAdmin(),
    );
  }
  return address;
}

const withKey = (key: string) => ({ headers: { authorization: `Bearer ${key}` } });
const workspaceKey = async (workspaceId: string, role = AdminKeyRole.ADMIN) =>
  (await admin.createAdminKey({ name: "provisioner", workspaceId, role }, asAdmin())).secret;

const mailTo = (address: string, what: string) =>
  smtp.waitFor((m) => m.to.includes(address) && m.raw.includes(what));
const idOf = async (address: string) =>
  (await admin.listUsers({ emailPrefix: address }, asAdmin())).users[0]?.id as string;
/** The JSON fields an answer carries, to compare the shapes of two answers. */
const fieldsOf = (schema: Parameters<typeof toJson>[0], message: never) =>
  Object.keys(toJson(schema, message) as object).sort();

const login = (address: string, pw: string, workspaceId: string, i = 0) =>
  (i % 2 ? authB : authA).login({ email: address, password: pw, workspaceId }, fromAnywhere());

describe("SECURITY.md 33: guessing stays bounded however it is spread", () => {
  it("forty concurrent guesses over three workspaces and two instances get at most five real password checks", async () => {
    const [w1, w2] = [await workspace("guess-member"), await workspace("guess-outside")];
    const victim = await sharedAccount("guessed", [w1]);
    const targets = [home, w1, w2];
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const target = targets[i % 3] as string;
        const guess = i === 20 ? password : `wrong guess ${i}`;
        return login(victim, guess, target, i).then(
          () => ({ target, reason: "OK" }),
          async (e) => ({ target, reason: (await failure(Promise.reject(e))).reason }),
        );
      }),
    );
    // Only the workspaces the account is a member of check its password at all.
    const checked = outcomes.filter(
      (o) => o.target !== w2 && (o.reason === "INVALID_CREDENTIALS" || o.reason === "OK"),
    );
    expect(checked.length).toBeGreaterThan(0);
    expect(checked.length).toBeLessThanOrEqual(5);
    for (const o of outcomes.filter((o) => o.target !== w2)) {
      expect(["INVALID_CREDENTIALS", "OK", "ACCOUNT_LOCKED", "RATE_LIMITED"]).toContain(o.reason);
    }
  });

  it("a login where the account has no active membership looks exactly like a wrong password, and locks nothing elsewhere", async () => {
    const outside = await workspace("not-a-member");
    const victim = await sharedAccount("outsider");
    const right = await failure(login(victim, password, outside));
    const wrong = await failure(login(email("nobody"), password, outside));
    expect(right.code).toBe(Code.Unauthenticated);
    expect(right.reason).toBe("INVALID_CREDENTIALS");
    expect([right.code, right.reason, right.error.rawMessage]).toEqual([
      wrong.code,
      wrong.reason,
      wrong.error.rawMessage,
    ]);
    // Guessing there until it locks (the right password above was the first of five), from
    // two instances:
    const there = [];
    for (let i = 0; i < 6; i++)
      there.push((await failure(login(victim, "guess", outside, i))).reason);
    expect(there.slice(0, 4)).toEqual(Array(4).fill("INVALID_CREDENTIALS"));
    expect(there.slice(4)).toEqual(["ACCOUNT_LOCKED", "ACCOUNT_LOCKED"]);
    // ...leaves the account's own workspace open to its owner.
    expect((await login(victim, password, home)).result.case).toBe("tokens");
  });

  it("the workspace's audit log does not name an account that is not its member", async () => {
    const outside = await workspace("audit-outside");
    const victim = await sharedAccount("audited");
    await failure(login(victim, password, outside));
    await failure(login(email("unknown"), password, outside));
    const { events } = await admin.listAuditEvents(
      { workspaceId: outside, types: ["login_failed"] },
      asAdmin(),
    );
    expect(events).toHaveLength(2);
    for (const e of events) {
      expect(e.userId).toBe("");
      expect(e.details).toEqual({ reason: "no_member" });
    }
    // A workspace with open sign-up that signs the address up does not get the account's id
    // in its log either.
    const open = await workspace("audit-signup", { signup: true });
    await authA.signUp({ email: victim, password }, fromAnywhere({ "x-workspace-id": open }));
    const signups = await admin.listAuditEvents(
      { workspaceId: open, types: ["signup"] },
      asAdmin(),
    );
    expect(signups.events.map((e) => [e.userId, e.details])).toEqual([
      ["", { reason: "email_taken" }],
    ]);
  });

  it("ChangePassword's current password counts like a login, and the new one is judged first", async () => {
    const victim = await sharedAccount("change");
    const { result } = await login(victim, password, home);
    const token = result.case === "tokens" ? result.value.accessToken : "";
    // A new password the policy refuses is refused the same way whatever the current one.
    const short = { newPassword: "short" };
    const withRight = await failure(
      authA.changePassword({ currentPassword: password, ...short }, bearer(token)),
    );
    const withWrong = await failure(
      authA.changePassword({ currentPassword: "a guess", ...short }, bearer(token)),
    );
    expect(withRight.code).toBe(Code.InvalidArgument);
    expect(withRight.fields).toEqual(["new_password"]);
    expect([withWrong.code, withWrong.fields]).toEqual([withRight.code, withRight.fields]);
    // Five wrong current passwords lock the account: for ChangePassword and for Login.
    const next = { newPassword: "a perfectly fine new password" };
    for (let i = 0; i < 5; i++) {
      const e = await failure(
        (i % 2 ? authB : authA).changePassword(
          { currentPassword: `guess ${i}`, ...next },
          bearer(token),
        ),
      );
      expect(e.reason).toBe("CURRENT_PASSWORD_INVALID");
    }
    const locked = await failure(
      authA.changePassword({ currentPassword: password, ...next }, bearer(token)),
    );
    expect([locked.code, locked.reason]).toEqual([Code.ResourceExhausted, "ACCOUNT_LOCKED"]);
    expect((await failure(login(victim, password, home))).reason).toBe("ACCOUNT_LOCKED");
  });
});

describe("SECURITY.md 31: every workspace's requirements hold however a session enters it", () => {
  it("SwitchWorkspace into a workspace that requires the emailed second step answers a pending login, not tokens", async () => {
    const strict = await workspace("second-step", { otpLogin: OtpLoginMode.REQUIRED });
    const victim = await sharedAccount("switch-otp", [strict]);
    const { result } = await login(victim, password, home);
    const token = result.case === "tokens" ? result.value.accessToken : "";
    const switched = await authB.switchWorkspace({ workspaceId: strict }, bearer(token));
    expect(switched.tokens).toBeUndefined();
    expect(switched.pendingLogin?.pendingLoginId).toMatch(/.+/);
    // The same as a password login there.
    const direct = await login(victim, password, strict);
    expect(direct.result.case).toBe("pendingLogin");
  });

  it("SwitchWorkspace into a workspace that requires a verified address refuses an unverified one", async () => {
    const strict = await workspace("verified-only", { requireEmailVerification: true });
    const victim = await sharedAccount("switch-unverified", [strict], { proven: false });
    const { result } = await login(victim, password, home);
    const token = result.case === "tokens" ? result.value.accessToken : "";
    const e = await failure(authA.switchWorkspace({ workspaceId: strict }, bearer(token)));
    expect([e.code, e.reason]).toEqual([Code.FailedPrecondition, "EMAIL_NOT_VERIFIED"]);
  });

  it("a password changed through one workspace meets the strictest policy of the account's workspaces", async () => {
    const strict = await workspace("long-passwords", { passwordMinLength: 24 });
    const victim = await sharedAccount("strictest", [strict]);
    const { result } = await login(victim, password, home);
    const token = result.case === "tokens" ? result.value.accessToken : "";
    const tooShort = await failure(
      authA.changePassword(
        { currentPassword: password, newPassword: "twenty chars long pwd" },
        bearer(token),
      ),
    );
    expect([tooShort.code, tooShort.fields]).toEqual([Code.InvalidArgument, ["new_password"]]);
    await authA.changePassword(
      { currentPassword: password, newPassword: "twenty-four characters, at least" },
      bearer(token),
    );
    const there = await login(victim, "twenty-four characters, at least", strict);
    expect(there.result.case).toBe("tokens");
  });
});

describe("SECURITY.md 32: no admin key exceeds the user who minted it", () => {
  /** A workspace with an owner and an admin, each signed in there. */
  async function team(tag: string) {
    const owner = await sharedAccount(`${tag}-owner`);
    const ownerId = (await login(owner, password, home)).result.value as { userId: string };
    const res = await admin.createWorkspace(
      {
        name: `Team ${tag}`,
        slug: `${tag}-${++n}-${Date.now().toString(36)}`,
        ownerUserId: ownerId.userId,
      },
      asAdmin(),
    );
    const workspaceId = res.workspace?.id as string;
    const deputy = await sharedAccount(`${tag}-admin`);
    const provisioned = await admin.provisionUser(
      { email: deputy, workspaceId, role: Role.ADMIN, password: "" },
      asAdmin(),
    );
    const tokensOf = async (address: string) => {
      const r = await login(address, password, workspaceId);
      if (r.result.case !== "tokens") throw new Error("no tokens");
      return r.result.value;
    };
    return {
      workspaceId,
      owner: { id: ownerId.userId, tokens: await tokensOf(owner) },
      deputy: { id: provisioned.user?.id as string, tokens: await tokensOf(deputy) },
    };
  }
  const mint = async (workspaceId: string, token: string, name = "automation") =>
    (await admin.createAdminKey({ name, workspaceId, role: AdminKeyRole.ADMIN }, bearer(token)))
      .secret;

  it("an admin's key cannot make its creator owner, touch the owner, or add owners; an owner's key can", async () => {
    const t = await team("ceiling");
    const key = await mint(t.workspaceId, t.deputy.tokens.accessToken);
    const { workspaceId } = t;
    const refusals = await Promise.all([
      failure(
        admin.updateMember({ workspaceId, userId: t.deputy.id, role: Role.OWNER }, withKey(key)),
      ),
      failure(
        admin.updateMember({ workspaceId, userId: t.owner.id, role: Role.MEMBER }, withKey(key)),
      ),
      failure(
        admin.updateMember(
          { workspaceId, userId: t.owner.id, status: MembershipStatus.DISABLED },
          withKey(key),
        ),
      ),
      failure(admin.removeMember({ workspaceId, userId: t.owner.id }, withKey(key))),
      failure(
        admin.provisionUser(
          { email: email("new-owner"), workspaceId, role: Role.OWNER, password },
          withKey(key),
        ),
      ),
    ]);
    for (const r of refusals)
      expect([r.code, r.reason]).toEqual([Code.PermissionDenied, "PERMISSION_DENIED"]);
    // What an admin may do, the key may do.
    const member = await admin.provisionUser(
      { email: email("helper"), workspaceId, role: Role.MEMBER, password },
      withKey(key),
    );
    expect(member.membership?.role).toBe(Role.MEMBER);
    // An owner's key manages owners.
    const ownersKey = await mint(workspaceId, t.owner.tokens.accessToken);
    const promoted = await admin.updateMember(
      { workspaceId, userId: t.deputy.id, role: Role.OWNER },
      withKey(ownersKey),
    );
    expect(promoted.membership?.role).toBe(Role.OWNER);
  });

  it("ListAdminKeys shows who minted a key; its lifetime is bounded", async () => {
    const t = await team("lifetime");
    const before = Date.now();
    await mint(t.workspaceId, t.deputy.tokens.accessToken, "bounded");
    const { adminKeys } = await admin.listAdminKeys({ workspaceId: t.workspaceId }, asAdmin());
    const listed = adminKeys.find((k) => k.name === "bounded");
    expect(listed?.createdBy).toBe(`user:${t.deputy.id}`);
    expect(listed?.createdByUserId).toBe(t.deputy.id);
    const expires = Number(listed?.expireTime?.seconds) * 1000;
    expect(expires).toBeGreaterThanOrEqual(before + 90 * 86_400_000 - 5_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 90 * 86_400_000);
    const tooLong = await failure(
      admin.createAdminKey(
        {
          name: "forever",
          workspaceId: t.workspaceId,
          role: AdminKeyRole.ADMIN,
          expireTime: { seconds: BigInt(Math.floor(Date.now() / 1000) + 91 * 86_400), nanos: 0 },
        },
        bearer(t.deputy.tokens.accessToken),
      ),
    );
    expect([tooLong.code, tooLong.fields]).toEqual([Code.InvalidArgument, ["expire_time"]]);
  });

  /** Polls instance B until the key is refused (at most three seconds). */
  async function refusedWithin(key: string, workspaceId: string) {
    const started = performance.now();
    for (;;) {
      const ok = await adminB.listMembers({ workspaceId }, withKey(key)).then(
        () => true,
        async (e) => {
          const f = await failure(Promise.reject(e));
          expect(f.code).toBe(Code.Unauthenticated);
          return false;
        },
      );
      if (!ok) return performance.now() - started;
      if (performance.now() - started > 3_000) throw new Error("the key still works");
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it("stops working on another instance (after its one-second cache) once its creator is demoted, disabled, removed, blocked or deleted, and so do keys it minted", async () => {
    const changes: [string, (t: Awaited<ReturnType<typeof team>>) => Promise<unknown>][] = [
      [
        "demoted",
        (t) =>
          admin.updateMember(
            { workspaceId: t.workspaceId, userId: t.deputy.id, role: Role.MEMBER },
            asAdmin(),
          ),
      ],
      [
        "disabled",
        (t) =>
          admin.updateMember(
            { workspaceId: t.workspaceId, userId: t.deputy.id, status: MembershipStatus.DISABLED },
            asAdmin(),
          ),
      ],
      [
        "removed",
        (t) => admin.removeMember({ workspaceId: t.workspaceId, userId: t.deputy.id }, asAdmin()),
      ],
      ["blocked", (t) => admin.blockUser({ userId: t.deputy.id, reason: "test" }, asAdmin())],
      ["deleted", (t) => admin.deleteUser({ userId: t.deputy.id }, asAdmin())],
    ];
    for (const [what, change] of changes) {
      const t = await team(`creator-${what}`);
      const key = await mint(t.workspaceId, t.deputy.tokens.accessToken);
      const child = (
        await admin.createAdminKey(
          { name: "child", workspaceId: t.workspaceId, role: AdminKeyRole.READ_ONLY },
          withKey(key),
        )
      ).secret;
      // Both work through instance B first (and are cached there).
      await adminB.listMembers({ workspaceId: t.workspaceId }, withKey(key));
      await adminB.listMembers({ workspaceId: t.workspaceId }, withKey(child));
      await change(t);
      expect(await refusedWithin(key, t.workspaceId), what).toBeLessThan(3_000);
      expect(await refusedWithin(child, t.workspaceId), what).toBeLessThan(3_000);
    }
    // Five teams, each with its password hashes: more than the default 30 s on a loaded machine.
  }, 90_000);
});

describe("SECURITY.md 28: an account that never proved its address is no claim on it", () => {
  /** Someone signs an address up first, with a password of their choosing. */
  const squat = async (tag: string) => {
    const address = await sharedAccount(tag, [], { proven: false });
    const { result } = await login(address, password, home);
    if (result.case !== "tokens") throw new Error("no tokens");
    return { address, tokens: result.value };
  };

  it("a workspace provisioning the address invites it: the earlier password and sessions open nothing until the owner accepts", async () => {
    const corp = await workspace("corp");
    const key = await workspaceKey(corp);
    const squatter = await squat("victim");
    const made = await admin.provisionUser(
      {
        email: squatter.address,
        workspaceId: corp,
        role: Role.ADMIN,
        password: "the corp's own password",
        emailVerified: true,
      },
      withKey(key),
    );
    expect([made.created, made.membership?.status]).toEqual([false, MembershipStatus.INVITED]);
    for (const pw of [password, "the corp's own password"]) {
      const refused = await failure(login(squatter.address, pw, corp));
      expect([refused.code, refused.reason]).toEqual([Code.Unauthenticated, "INVALID_CREDENTIALS"]);
    }
    const switched = await failure(
      authB.switchWorkspace({ workspaceId: corp }, bearer(squatter.tokens.accessToken)),
    );
    expect([switched.code, switched.reason]).toEqual([
      Code.PermissionDenied,
      "MEMBERSHIP_INACTIVE",
    ]);
    // The owner of the mailbox accepts. The password from before was never tied to the
    // mailbox, so accepting must replace it.
    const link = linkIn(await mailTo(squatter.address, "accept-invitation"));
    const bare = await failure(authB.acceptInvitation({ token: link.token, password: "" }));
    expect([bare.code, bare.fields]).toEqual([Code.InvalidArgument, ["password"]]);
    const accepted = await authB.acceptInvitation({
      token: link.token,
      password: "the mailbox owner's password",
    });
    expect([accepted.tokens?.workspaceId, accepted.tokens?.role]).toEqual([corp, Role.ADMIN]);
    expect((await login(squatter.address, "the mailbox owner's password", corp)).result.case).toBe(
      "tokens",
    );
    expect((await failure(login(squatter.address, password, home))).reason).toBe(
      "INVALID_CREDENTIALS",
    );
    expect((await failure(authA.getSession({}, bearer(squatter.tokens.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("no workspace takes over or wipes another workspace's unproven account by claiming it", async () => {
    const rogue = await workspace("rogue");
    const key = await workspaceKey(rogue);
    const victim = await squat("unverified-user");
    await admin.provisionUser(
      { email: victim.address, workspaceId: rogue, role: Role.MEMBER, password: "rogue's choice" },
      withKey(key),
    );
    await admin.addMember({ workspaceId: rogue, email: email("other-unverified") }, withKey(key));
    // The rogue's password opens nothing; the account and its session in its own workspace
    // are as they were.
    for (const w of [home, rogue]) {
      expect((await failure(login(victim.address, "rogue's choice", w))).reason).toBe(
        "INVALID_CREDENTIALS",
      );
    }
    expect((await login(victim.address, password, home)).result.case).toBe("tokens");
    expect((await authA.getSession({}, bearer(victim.tokens.accessToken))).user?.email).toBe(
      victim.address,
    );
  });

  it("inviting the address by AddMember: only the invitation's reader gets in, and the earlier sessions end", async () => {
    const corp = await workspace("corp-invite");
    const squatter = await squat("invited");
    await admin.addMember(
      { workspaceId: corp, email: squatter.address, role: Role.MEMBER },
      asAdmin(),
    );
    expect((await failure(login(squatter.address, password, corp))).code).toBe(
      Code.FailedPrecondition,
    );
    const link = linkIn(await mailTo(squatter.address, "accept-invitation"));
    const accepted = await authA.acceptInvitation({ token: link.token, password: "from my inbox" });
    expect(accepted.tokens?.workspaceId).toBe(corp);
    expect((await failure(authA.getSession({}, bearer(squatter.tokens.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await failure(login(squatter.address, password, home))).reason).toBe(
      "INVALID_CREDENTIALS",
    );
  });

  it("a proven address that a squatter's password still guards is no claim either", async () => {
    const corp = await workspace("corp-after-proof");
    const squatter = await squat("proved-later");
    // The mailbox's owner proves the address with an emailed code, without the squatter's
    // session; the squatter's password was never tied to the mailbox.
    const before = smtp.received.length;
    await authB.sendEmailVerification({ email: squatter.address, workspaceId: home });
    const mail = await smtp.waitFor(
      (m) => smtp.received.indexOf(m) >= before && m.to.includes(squatter.address),
    );
    const code = /\b(\d{6})\b/.exec(mail.raw)?.[1] as string;
    await authB.verifyEmail({
      proof: { case: "code", value: { email: squatter.address, code, workspaceId: home } },
    });
    const { users } = await admin.listUsers({ emailPrefix: squatter.address }, asAdmin());
    expect(users[0]?.emailVerified).toBe(true);
    await admin.provisionUser(
      { email: squatter.address, workspaceId: corp, role: Role.ADMIN, password: "" },
      asAdmin(),
    );
    expect((await failure(login(squatter.address, password, corp))).code).toBe(
      Code.FailedPrecondition,
    );
  });

  it("an account vouched for by a deployment admin joins as it is", async () => {
    const corp = await workspace("corp-proven");
    const address = await sharedAccount("proven");
    await admin.provisionUser(
      { email: address, workspaceId: corp, role: Role.MEMBER, password: "someone else's" },
      asAdmin(),
    );
    expect((await login(address, password, corp)).result.case).toBe("tokens");
    expect((await failure(login(address, "someone else's", corp))).reason).toBe(
      "INVALID_CREDENTIALS",
    );
  });

  it("a workspace's word that an address is verified holds for that workspace only", async () => {
    const strict = await workspace("vouching", { requireEmailVerification: true });
    const other = await workspace("elsewhere");
    const key = await workspaceKey(strict);
    const address = email("vouched");
    const made = await admin.provisionUser(
      { email: address, workspaceId: strict, role: Role.MEMBER, password, emailVerified: true },
      withKey(key),
    );
    expect((await login(address, password, strict)).result.case).toBe("tokens");
    const userId = made.user?.id as string;
    await admin.markEmailVerified({ userId }, withKey(key));
    expect((await admin.getUser({ userId }, asAdmin())).user?.emailVerified).toBe(false);
    // The password the first workspace chose does not open another that claims the address.
    await admin.addMember({ workspaceId: other, email: address }, asAdmin());
    expect((await failure(login(address, password, other))).code).toBe(Code.FailedPrecondition);
    expect((await login(address, password, strict)).result.case).toBe("tokens");
  });

  it("a workspace created with an unproven account as its owner does not open to that password", async () => {
    const squatter = await squat("made-owner");
    const userId = await idOf(squatter.address);
    const made = await admin.createWorkspace(
      { name: "Big corp", slug: `bigcorp-${++n}-${Date.now().toString(36)}`, ownerUserId: userId },
      asAdmin(),
    );
    const corp = made.workspace?.id as string;
    const refused = await failure(login(squatter.address, password, corp));
    expect([refused.code, refused.reason]).toEqual([Code.FailedPrecondition, "EMAIL_NOT_VERIFIED"]);
    const switched = await failure(
      authB.switchWorkspace({ workspaceId: corp }, bearer(squatter.tokens.accessToken)),
    );
    expect([switched.code, switched.reason]).toEqual([
      Code.FailedPrecondition,
      "EMAIL_NOT_VERIFIED",
    ]);
    // The mailbox's owner is invited to prove it, and then gets in.
    const link = linkIn(await mailTo(squatter.address, "accept-invitation"));
    const accepted = await authA.acceptInvitation({ token: link.token, password: "mine, proven" });
    expect([accepted.tokens?.workspaceId, accepted.tokens?.role]).toEqual([corp, Role.OWNER]);
  });

  it("a squatter's account never keeps the owner out of another open workspace: SignUp there mails a link to join", async () => {
    const open = await workspace("open-elsewhere", { signup: true });
    const squatter = await squat("kept-out");
    // The mailbox's owner signs up where they want to be; the address has an account already.
    await authA.signUp(
      { email: squatter.address, password: "the owner's own password" },
      fromAnywhere({ "x-workspace-id": open }),
    );
    const mail = await mailTo(squatter.address, "accept-invitation");
    expect(mail.raw).toContain("already an account");
    // Nothing joins until the link is followed, and the workspace sees nothing of it.
    const userId = await idOf(squatter.address);
    const before = await admin.listMembers({ workspaceId: open }, asAdmin());
    expect(before.memberships.map((m) => m.userId)).not.toContain(userId);
    expect((await failure(login(squatter.address, password, open))).reason).toBe(
      "INVALID_CREDENTIALS",
    );
    const link = linkIn(mail);
    // The squatter's password was never tied to the mailbox: joining must replace it.
    const bare = await failure(authB.acceptInvitation({ token: link.token, password: "" }));
    expect([bare.code, bare.fields]).toEqual([Code.InvalidArgument, ["password"]]);
    const joined = await authB.acceptInvitation({
      token: link.token,
      password: "the owner's own password",
    });
    expect([joined.tokens?.workspaceId, joined.tokens?.role]).toEqual([open, Role.MEMBER]);
    expect((await failure(login(squatter.address, password, home))).reason).toBe(
      "INVALID_CREDENTIALS",
    );
    expect((await failure(authA.getSession({}, bearer(squatter.tokens.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await failure(authB.acceptInvitation({ token: link.token, password: "" }))).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("a look-alike spelling registered first is stored as the address it stands for", async () => {
    const plain = email("lookalike");
    const fullwidth = [...plain]
      .map((c) => (/[a-z]/.test(c) ? String.fromCharCode(c.charCodeAt(0) + 0xfee0) : c))
      .join("");
    await authA.signUp({ email: fullwidth, password }, fromAnywhere({ "x-workspace-id": home }));
    const { users } = await admin.listUsers({ emailPrefix: plain }, asAdmin());
    expect(users.map((u) => u.email)).toEqual([plain]);
  });
});

describe("SECURITY.md 29: a workspace sees and changes only its own view of a shared account", () => {
  it("admin answers to a workspace-scoped caller carry no lockout state of the account", async () => {
    const corp = await workspace("lockout-view");
    const address = await sharedAccount("lockout-view", [corp]);
    for (let i = 0; i < 3; i++) await failure(login(address, "wrong guess", home, i));
    const key = (
      await admin.createAdminKey(
        { name: "reader", workspaceId: corp, role: AdminKeyRole.READ_ONLY },
        asAdmin(),
      )
    ).secret;
    const { users } = await admin.listUsers({ emailPrefix: address }, asAdmin());
    const userId = users[0]?.id as string;
    expect(users[0]?.failedLoginCount).toBe(3);
    const seen = await admin.getUser({ userId }, { headers: { authorization: `Bearer ${key}` } });
    expect(seen.user?.failedLoginCount).toBe(0);
    expect(seen.user?.lockedUntil).toBeUndefined();
    const listed = await admin.listUsers(
      { workspaceId: corp, emailPrefix: address },
      { headers: { authorization: `Bearer ${key}` } },
    );
    expect(listed.users[0]?.failedLoginCount).toBe(0);
  });

  it("each workspace reads and writes only its own metadata for a shared account; the account's own is the deployment's", async () => {
    const [wa, wb] = [await workspace("meta-a"), await workspace("meta-b")];
    const address = await sharedAccount("meta", [wa, wb]);
    const userId = await idOf(address);
    const [keyA, keyB] = [await workspaceKey(wa), await workspaceKey(wb)];
    await admin.updateUserMetadata({ userId, metadata: { plan: "b-gold" } }, withKey(keyB));
    const written = await admin.updateUserMetadata(
      { userId, metadata: { plan: "a-free", seats: 3 } },
      withKey(keyA),
    );
    expect(written.user?.metadata).toEqual({ plan: "a-free", seats: 3 });
    await admin.updateUserMetadata(
      { userId, metadata: { note: "merged" }, merge: true },
      withKey(keyA),
    );
    // B sees its own object in every answer that carries one.
    const ofB = { plan: "b-gold" };
    expect((await admin.getUser({ userId }, withKey(keyB))).user?.metadata).toEqual(ofB);
    const listed = await admin.listUsers({ workspaceId: wb, emailPrefix: address }, withKey(keyB));
    expect(listed.users.map((u) => u.metadata)).toEqual([ofB]);
    const member = (await admin.listMembers({ workspaceId: wb }, withKey(keyB))).memberships.find(
      (m) => m.userId === userId,
    );
    expect([member?.metadata, member?.user?.metadata]).toEqual([ofB, ofB]);
    expect((await admin.getUser({ userId }, withKey(keyA))).user?.metadata).toEqual({
      plan: "a-free",
      seats: 3,
      note: "merged",
    });
    // A cannot name B's view.
    for (const call of [
      () => admin.getUser({ userId, workspaceId: wb }, withKey(keyA)),
      () => admin.updateUserMetadata({ userId, workspaceId: wb, metadata: {} }, withKey(keyA)),
    ])
      expect((await failure(call())).code).toBe(Code.PermissionDenied);
    // The deployment admin has the account's own object, and reads any workspace's by name.
    await admin.updateUserMetadata({ userId, metadata: { tier: "internal" } }, asAdmin());
    expect((await admin.getUser({ userId }, asAdmin())).user?.metadata).toEqual({
      tier: "internal",
    });
    expect((await admin.getUser({ userId, workspaceId: wb }, asAdmin())).user?.metadata).toEqual(
      ofB,
    );
    expect((await admin.getUser({ userId }, withKey(keyB))).user?.metadata).toEqual(ofB);
    // The account's own state is not a workspace's to change.
    for (const call of [
      () => admin.blockUser({ userId, reason: "mine now" }, withKey(keyA)),
      () => admin.unblockUser({ userId }, withKey(keyA)),
      () => admin.deleteUser({ userId }, withKey(keyA)),
      () => admin.revokeUserSessions({ userId }, withKey(keyA)),
    ])
      expect((await failure(call())).code).toBe(Code.PermissionDenied);
    expect((await login(address, password, wb)).result.case).toBe("tokens");
  });

  it("GetSession shows the member this workspace's metadata, never the account's own", async () => {
    const corp = await workspace("session-meta");
    const address = await sharedAccount("session-meta", [corp]);
    const userId = await idOf(address);
    await admin.updateUserMetadata({ userId, metadata: { operator: "only" } }, asAdmin());
    await admin.updateUserMetadata({ userId, workspaceId: corp, metadata: { corp: 1 } }, asAdmin());
    const there = await login(address, password, corp);
    if (there.result.case !== "tokens") throw new Error("no tokens");
    const seen = await authA.getSession({}, bearer(there.result.value.accessToken));
    expect(seen.user?.metadata).toEqual({ corp: 1 });
  });

  it("metadata holding a lone UTF-16 surrogate is INVALID_ARGUMENT naming the field", async () => {
    const corp = await workspace("surrogate");
    const address = await sharedAccount("surrogate", [corp]);
    const userId = await idOf(address);
    // As raw Connect JSON: a generated client's UTF-8 encoding would replace the surrogate.
    const call = async (rpc: string, body: Record<string, unknown>) => {
      const res = await fetch(`${a.url}/keygate.v1.AdminService/${rpc}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${adminKey}` },
        body: JSON.stringify(body),
      });
      const answer = (await res.json()) as {
        code: string;
        details?: { debug?: { fieldViolations?: { field: string }[] } }[];
      };
      const fields = answer.details?.flatMap((d) => d.debug?.fieldViolations ?? []) ?? [];
      return [res.status, answer.code, fields.map((f) => f.field)];
    };
    const refused = [400, "invalid_argument", ["metadata"]];
    for (const metadata of [{ s: "\ud800" }, { ["k\udc00"]: 1 }, { n: { deeper: ["x\ud83d"] } }]) {
      expect(await call("UpdateUserMetadata", { userId, metadata })).toEqual(refused);
      expect(
        await call("ProvisionUser", { email: email("surrogate"), workspaceId: corp, metadata }),
      ).toEqual(refused);
    }
  });

  it("a workspace admin changes nothing of an owner's: metadata, verification, sessions", async () => {
    const corp = await workspace("owner-view");
    const ownerAddress = email("owner-view-owner");
    const adminAddress = email("owner-view-deputy");
    const memberAddress = email("owner-view-plain");
    for (const [address, role] of [
      [ownerAddress, Role.OWNER],
      [adminAddress, Role.ADMIN],
      [memberAddress, Role.MEMBER],
    ] as const)
      await admin.provisionUser({ email: address, workspaceId: corp, role, password }, asAdmin());
    const [ownerId, memberId] = [await idOf(ownerAddress), await idOf(memberAddress)];
    const deputy = await login(adminAddress, password, corp);
    if (deputy.result.case !== "tokens") throw new Error("no tokens");
    const asDeputy = bearer(deputy.result.value.accessToken);
    const owner = await login(ownerAddress, password, corp);
    if (owner.result.case !== "tokens") throw new Error("no tokens");
    for (const call of [
      () => admin.updateUserMetadata({ userId: ownerId, metadata: { x: 1 } }, asDeputy),
      () => admin.markEmailVerified({ userId: ownerId }, asDeputy),
      () => admin.revokeUserSessions({ userId: ownerId, workspaceId: corp }, asDeputy),
    ]) {
      const f = await failure(call());
      expect([f.code, f.error.rawMessage]).toEqual([
        Code.PermissionDenied,
        "only an owner may manage owners",
      ]);
    }
    expect((await authA.getSession({}, bearer(owner.result.value.accessToken))).user?.id).toBe(
      ownerId,
    );
    // The same calls on a member are the deputy's to make.
    await admin.updateUserMetadata({ userId: memberId, metadata: { x: 1 } }, asDeputy);
    await admin.markEmailVerified({ userId: memberId }, asDeputy);
    await admin.revokeUserSessions({ userId: memberId, workspaceId: corp }, asDeputy);
  });
});

describe("SECURITY.md 30: adding an existing account to a workspace needs its consent", () => {
  it("AddMember invites: until the account accepts, the workspace sees only the invitation, and cannot tell an account from a new address", async () => {
    const corp = await workspace("inviting");
    const key = await workspaceKey(corp);
    const address = await sharedAccount("invitee");
    const homeLogin = await login(address, password, home);
    if (homeLogin.result.case !== "tokens") throw new Error("no tokens");
    const atHome = bearer(homeLogin.result.value.accessToken);

    const existing = (await admin.addMember({ workspaceId: corp, email: address }, withKey(key)))
      .membership;
    const fresh = (
      await admin.addMember({ workspaceId: corp, email: email("new-invitee") }, withKey(key))
    ).membership;
    for (const m of [existing, fresh])
      expect([m?.status, m?.role]).toEqual([MembershipStatus.INVITED, Role.MEMBER]);
    expect(fieldsOf(MembershipSchema, existing as never)).toEqual(
      fieldsOf(MembershipSchema, fresh as never),
    );
    const userId = existing?.userId as string;
    const listed = (await admin.listMembers({ workspaceId: corp }, withKey(key))).memberships;
    const invitation = listed.find((m) => m.userId === userId);
    expect(invitation?.status).toBe(MembershipStatus.INVITED);
    expect(fieldsOf(UserSchema, invitation?.user as never)).toEqual(["email", "id"]);

    // Not a member yet to any other RPC, and nothing opens the workspace.
    for (const call of [
      () => admin.getUser({ userId }, withKey(key)),
      () => admin.updateUserMetadata({ userId, metadata: { x: 1 } }, withKey(key)),
      () => admin.markEmailVerified({ userId }, withKey(key)),
      () => admin.revokeUserSessions({ userId, workspaceId: corp }, withKey(key)),
    ])
      expect((await failure(call())).code).toBe(Code.NotFound);
    expect(
      (await admin.listUsers({ workspaceId: corp, emailPrefix: address }, withKey(key))).users,
    ).toEqual([]);
    const activate = await failure(
      admin.updateMember(
        { workspaceId: corp, userId, status: MembershipStatus.ACTIVE },
        withKey(key),
      ),
    );
    expect([activate.code, activate.fields]).toEqual([Code.InvalidArgument, ["status"]]);
    expect((await failure(login(address, password, corp))).reason).toBe("INVALID_CREDENTIALS");
    expect((await failure(authA.switchWorkspace({ workspaceId: corp }, atHome))).reason).toBe(
      "MEMBERSHIP_INACTIVE",
    );
    const mine = await authA.listMyWorkspaces({}, atHome);
    expect(mine.memberships.map((m) => m.workspaceId)).not.toContain(corp);

    // The account's owner accepts from the mailbox, keeping the password it proved.
    const link = linkIn(await mailTo(address, "accept-invitation"));
    const accepted = await authB.acceptInvitation({ token: link.token, password: "" });
    expect(accepted.tokens?.workspaceId).toBe(corp);
    expect((await authA.getSession({}, atHome)).user?.email).toBe(address);
    expect((await login(address, password, corp)).result.case).toBe("tokens");
    expect((await admin.getUser({ userId }, withKey(key))).user?.email).toBe(address);
    const member = (await admin.listMembers({ workspaceId: corp }, withKey(key))).memberships.find(
      (m) => m.userId === userId,
    );
    expect(member?.status).toBe(MembershipStatus.ACTIVE);
    expect((await failure(authB.acceptInvitation({ token: link.token, password: "" }))).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("an invitation shows the folded address, whatever spelling the workspace typed", async () => {
    const corp = await workspace("folded");
    const key = await workspaceKey(corp);
    const existing = await sharedAccount("folded-existing");
    const fresh = email("folded-new");
    for (const address of [existing, fresh])
      await admin.addMember({ workspaceId: corp, email: address.toUpperCase() }, withKey(key));
    const { memberships } = await admin.listMembers({ workspaceId: corp }, withKey(key));
    const shown = memberships
      .filter((m) => m.status === MembershipStatus.INVITED)
      .map((m) => m.user?.email)
      .sort();
    expect(shown).toEqual([existing, fresh].sort());
  });

  it("an acceptance racing RemoveMember or a demotion leaves no live token beyond the membership", async () => {
    const introspectKey = (
      await admin.createAdminKey(
        { name: "gateway", role: AdminKeyRole.READ_ONLY, introspect: true },
        asAdmin(),
      )
    ).secret;
    const introspect = (token: string, on: typeof admin) =>
      createClient(
        TokenIntrospectionService,
        createConnectTransport({ baseUrl: on === admin ? a.url : b.url, httpVersion: "2" }),
      ).introspect({ token }, withKey(introspectKey));
    for (let round = 0; round < 16; round++) {
      const corp = await workspace(`race-${round}`);
      const key = await workspaceKey(corp);
      const address = await sharedAccount(`race-${round}`);
      const { membership } = await admin.addMember(
        { workspaceId: corp, email: address, role: Role.ADMIN },
        withKey(key),
      );
      const userId = membership?.userId as string;
      const link = linkIn(await mailTo(address, "accept-invitation"));
      const demote = round % 2 === 1;
      const [accepted] = await Promise.allSettled([
        authA.acceptInvitation({ token: link.token, password: "" }),
        demote
          ? adminB.updateMember({ workspaceId: corp, userId, role: Role.MEMBER }, withKey(key))
          : adminB.removeMember({ workspaceId: corp, userId }, withKey(key)),
      ]);
      if (accepted.status !== "fulfilled") continue;
      const token = accepted.value.tokens?.accessToken as string;
      // Removed: the token is dead. Demoted: the token is dead or says the new role. On every
      // instance within a second (SECURITY.md 38's bound for a revocation made on another
      // instance: it travels over the revocation feed).
      for (const on of [admin, adminB]) {
        const live = async () => {
          const seen = await introspect(token, on);
          return demote ? seen.active && seen.role === "admin" : seen.active;
        };
        await expect.poll(live, { timeout: 1_000, interval: 50 }).toBe(false);
      }
    }
  });

  it("RemoveMember withdraws an invitation: its link stops working", async () => {
    const corp = await workspace("withdrawn");
    const key = await workspaceKey(corp);
    const address = await sharedAccount("withdrawn-invitee");
    const { membership } = await admin.addMember(
      { workspaceId: corp, email: address },
      withKey(key),
    );
    const link = linkIn(await mailTo(address, "accept-invitation"));
    await admin.removeMember(
      { workspaceId: corp, userId: membership?.userId as string },
      withKey(key),
    );
    const f = await failure(authA.acceptInvitation({ token: link.token, password: "" }));
    expect([f.code, f.reason]).toEqual([Code.Unauthenticated, "CODE_INVALID"]);
    expect((await failure(login(address, password, corp))).reason).toBe("INVALID_CREDENTIALS");
  });
});
