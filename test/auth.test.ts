import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { Role } from "../gen/keygate/v1/types_pb.js";
import { sql } from "../src/db/sql.js";
import { failure } from "./support/failure.js";
import { uniqueEmail } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { codeIn, linkIn, mailText, startSmtpServer } from "./support/smtp.js";

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let defaultWorkspaceId: string;

const publicUrl = "https://app.example.test";
const counter = 0;
const password = "correct horse battery staple";

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({
    KEYGATE_SMTP_URL: smtp.url,
    KEYGATE_ALLOW_WORKSPACE_CREATION: "true",
    KEYGATE_PUBLIC_URL: publicUrl,
  });
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  auth = createClient(
    AuthService,
    createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
  );
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

const inWorkspace = (workspaceId: string) => ({ headers: { "x-workspace-id": workspaceId } });
const bearer = (token: string, workspaceId?: string) => ({
  headers: {
    authorization: `Bearer ${token}`,
    ...(workspaceId ? { "x-workspace-id": workspaceId } : {}),
  },
});

/** Signs a user up in the default workspace and logs in. */
async function member(tag: string, workspaceId = defaultWorkspaceId) {
  const email = uniqueEmail(tag);
  await auth.signUp({ email, password }, inWorkspace(workspaceId));
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  return { email, tokens: res.result.value };
}

const countRow = z.object({ n: z.number() });

describe("sign-up and login", () => {
  it("creates a workspace owned by the new user, who can then log in and see who they are", async () => {
    const email = uniqueEmail("owner");
    const slug = `acme-${counter}`;
    await auth.signUp({ email, password, workspaceName: "Acme", workspaceSlug: slug });
    const res = await auth.login({ email, password, workspaceSlug: slug });
    expect(res.result.case).toBe("tokens");
    const tokens = res.result.value as Exclude<
      typeof res.result.value,
      undefined | { pendingLoginId: string }
    >;
    const me = await auth.getSession({}, bearer(tokens.accessToken, tokens.workspaceId));
    expect(me.user?.email).toBe(email);
    expect(me.workspace?.slug).toBe(slug);
    expect(me.workspace?.name).toBe("Acme");
    expect(me.workspace?.id).toBe(tokens.workspaceId);
    expect(me.role).toBe(Role.OWNER);
    expect(me.session?.current).toBe(true);
    expect(me.session?.userId).toBe(me.user?.id);
    expect(Number(me.session?.expireTime?.seconds)).toBeGreaterThan(Date.now() / 1000);
    const again = await failure(
      auth.signUp({
        email: uniqueEmail("other"),
        password,
        workspaceName: "Acme",
        workspaceSlug: slug,
      }),
    );
    expect(again.code).toBe(Code.AlreadyExists);
    expect(again.error.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe(
      "workspace_slug",
    );
  });

  it("joins the workspace of x-workspace-id as a member and emails a verification code", async () => {
    const email = uniqueEmail("joiner");
    await auth.signUp({ email, password }, inWorkspace(defaultWorkspaceId));
    const mail = await smtp.waitFor((m) => m.to.includes(email));
    const code = codeIn(mail);
    await auth.verifyEmail({
      proof: { case: "code", value: { email, code, workspaceId: defaultWorkspaceId } },
    });
    const res = await auth.login({ email, password, workspaceId: defaultWorkspaceId });
    const tokens = res.result.value as { accessToken: string; role: Role };
    expect(tokens.role).toBe(Role.MEMBER);
    const me = await auth.getSession({}, bearer(tokens.accessToken));
    expect(me.user?.emailVerified).toBe(true);
  });

  it("SECURITY.md 17: sign-up answers byte for byte the same for a taken address, and mails its owner", async () => {
    const { email } = await member("taken");
    const send = (address: string) =>
      fetch(`${keygate.url}/keygate.v1.AuthService/SignUp`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-workspace-id": defaultWorkspaceId },
        body: JSON.stringify({ email: address, password }),
      });
    const taken = await send(email);
    const fresh = await send(uniqueEmail("fresh"));
    expect(taken.status).toBe(fresh.status);
    expect(await taken.text()).toBe(await fresh.text());
    const notice = await smtp.waitFor(
      (m) => m.to.includes(email) && /already have an account|already has an account/i.test(m.raw),
    );
    expect(notice).toBeDefined();
  });

  it("a sign-up for a taken address mails its owner none of the request's text", async () => {
    const { email } = await member("injected");
    const bait = "Your mailbox will be closed, keep it active at https://evil.example/keep";
    // Into a new workspace named by the caller...
    await auth.signUp({ email, password, workspaceName: bait, workspaceSlug: `bait-${counter}` });
    const first = await smtp.waitFor(
      (m) => m.to.includes(email) && /already have an account/i.test(m.raw),
    );
    // ...and into an existing workspace whose name a stranger chose.
    const slug = `bait-ws-${counter}`;
    await auth.signUp({
      email: uniqueEmail("bait-owner"),
      password,
      workspaceName: bait,
      workspaceSlug: slug,
    });
    const { workspaces } = await createClient(
      AdminService,
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
    ).listWorkspaces(
      { pageSize: 1000 },
      { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } },
    );
    const baitWorkspace = workspaces.find((w) => w.slug === slug);
    expect(baitWorkspace?.name).toBe(bait);
    await auth.signUp({ email, password }, inWorkspace(baitWorkspace?.id as string));
    const second = await smtp.waitFor(
      (m) => m !== first && m.to.includes(email) && /already have an account/i.test(m.raw),
    );
    for (const mail of [first, second]) {
      const text = mailText(mail);
      expect(text).toContain(email);
      expect(text).not.toContain("evil.example");
      expect(text).not.toContain("mailbox will be closed");
    }
    expect(mailText(second)).toContain(slug);
  });

  it("workspace names are one line of printable text wherever they are set", async () => {
    const admin = createClient(
      AdminService,
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
    );
    const asRoot = { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } };
    const fieldsOf = async (call: Promise<unknown>) => {
      const { code, error } = await failure(call);
      return {
        code,
        fields: error.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field),
      };
    };
    const refused = (field: string) => ({ code: Code.InvalidArgument, fields: [field] });
    for (const name of [
      "Acme\r\n\r\nYour mailbox will be closed",
      "Acme\nBcc: someone@example.test",
      "Acme\tInc",
      "Acme\u2028Inc",
      "Acme\u202eInc",
      "Acme\u200bInc",
      "Acme\u0007",
    ]) {
      expect(
        await fieldsOf(
          auth.signUp({
            email: uniqueEmail("name"),
            password,
            workspaceName: name,
            workspaceSlug: `name-${counter}`,
          }),
        ),
        JSON.stringify(name),
      ).toEqual(refused("workspace_name"));
      expect(
        await fieldsOf(admin.createWorkspace({ name, slug: `named-${counter}` }, asRoot)),
      ).toEqual(refused("name"));
      expect(
        await fieldsOf(admin.updateWorkspace({ workspaceId: defaultWorkspaceId, name }, asRoot)),
      ).toEqual(refused("name"));
      expect(
        await fieldsOf(
          admin.provisionUser(
            {
              email: uniqueEmail("provisioned"),
              createWorkspace: { name, slug: `prov-${counter}` },
              role: Role.OWNER,
            },
            asRoot,
          ),
        ),
      ).toEqual(refused("create_workspace.name"));
    }
    // Printable text of any script stays welcome, emoji sequences included.
    const created = await admin.createWorkspace(
      { name: "Acme – Zürich 東京 👩‍💻", slug: `printable-${counter}` },
      asRoot,
    );
    expect(created.workspace?.name).toBe("Acme – Zürich 東京 👩‍💻");
  });

  it("SECURITY.md 17: login answers the same for an unknown address and a wrong password", async () => {
    const { email } = await member("enum");
    const attempt = (address: string, pw: string) =>
      fetch(`${keygate.url}/keygate.v1.AuthService/Login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: address, password: pw, workspaceId: defaultWorkspaceId }),
      });
    const wrong = await attempt(email, "not the password at all");
    const unknown = await attempt(uniqueEmail("nobody"), "not the password at all");
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(wrong.status);
    expect(await unknown.text()).toBe(await wrong.text());
  });

  it("SECURITY.md 1: refuses short and common passwords with the field named", async () => {
    for (const [pw, reason] of [
      ["short", "PASSWORD_TOO_SHORT"],
      ["password1", "PASSWORD_TOO_COMMON"],
    ] as const) {
      const f = await failure(
        auth.signUp({ email: uniqueEmail("weak"), password: pw }, inWorkspace(defaultWorkspaceId)),
      );
      expect(f.code).toBe(Code.InvalidArgument);
      expect(f.reason).toBe(reason);
      expect(f.error.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("password");
    }
  });

  it("SECURITY.md 2: a password that differs only after byte 72 does not log in", async () => {
    const email = uniqueEmail("long");
    const long = `${"a1b2c3d4".repeat(10)}-tail-one`;
    await auth.signUp({ email, password: long }, inWorkspace(defaultWorkspaceId));
    const f = await failure(
      auth.login({
        email,
        password: `${"a1b2c3d4".repeat(10)}-tail-two`,
        workspaceId: defaultWorkspaceId,
      }),
    );
    expect(f.reason).toBe("INVALID_CREDENTIALS");
    expect(
      (await auth.login({ email, password: long, workspaceId: defaultWorkspaceId })).result.case,
    ).toBe("tokens");
  });

  it("answers bad input with INVALID_ARGUMENT naming each field", async () => {
    const f = await failure(
      auth.login({ email: "not-an-email", password: "", workspaceId: defaultWorkspaceId }),
    );
    expect(f.code).toBe(Code.InvalidArgument);
    const fields = f.error.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field);
    expect(fields).toEqual(["email", "password"]);
  });
});

describe("refresh tokens", () => {
  it("rotate: each refresh answers a new refresh token", async () => {
    const { tokens } = await member("rotate");
    const next = await auth.refresh({ refreshToken: tokens.refreshToken });
    expect(next.tokens?.refreshToken).not.toBe(tokens.refreshToken);
    expect(next.tokens?.sessionId).toBe(tokens.sessionId);
  });

  it("SECURITY.md 8: presenting a rotated token revokes the whole session, newest token included", async () => {
    const { tokens } = await member("reuse");
    const b = (await auth.refresh({ refreshToken: tokens.refreshToken })).tokens
      ?.refreshToken as string;
    const c = (await auth.refresh({ refreshToken: b })).tokens?.refreshToken as string;
    const reuse = await failure(auth.refresh({ refreshToken: tokens.refreshToken }));
    expect(reuse.code).toBe(Code.Unauthenticated);
    expect(reuse.reason).toBe("REFRESH_TOKEN_REUSED");
    expect((await failure(auth.refresh({ refreshToken: c }))).reason).toBe("REFRESH_TOKEN_INVALID");
    expect((await failure(auth.getSession({}, bearer(tokens.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    const events = await keygate.database.pool.oneFirst(sql.type(countRow)`
      SELECT count(*)::int AS n FROM audit_events WHERE type = 'refresh_reuse_detected' AND session_id = ${tokens.sessionId}`);
    expect(events).toBe(1);
  });

  it("SECURITY.md 9: the immediate parent within the grace window gets the same successor; older ancestors do not", async () => {
    const { tokens } = await member("grace");
    const b = (await auth.refresh({ refreshToken: tokens.refreshToken })).tokens
      ?.refreshToken as string;
    const again = (await auth.refresh({ refreshToken: tokens.refreshToken })).tokens?.refreshToken;
    expect(again).toBe(b);
    await auth.refresh({ refreshToken: b });
    expect((await failure(auth.refresh({ refreshToken: tokens.refreshToken }))).reason).toBe(
      "REFRESH_TOKEN_REUSED",
    );
  });

  it("SECURITY.md 10: of N concurrent refreshes with one token exactly one live successor exists", async () => {
    const { tokens } = await member("race");
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () => auth.refresh({ refreshToken: tokens.refreshToken })),
    );
    const successors = new Set(
      results.flatMap((r) => (r.status === "fulfilled" ? [r.value.tokens?.refreshToken] : [])),
    );
    expect(successors.size).toBe(1);
    const rows = await keygate.database.pool.oneFirst(sql.type(countRow)`
      SELECT count(*)::int AS n FROM refresh_tokens WHERE session_id = ${tokens.sessionId}`);
    expect(rows).toBe(2);
  });

  it("SECURITY.md 6: an access token is not accepted as a refresh token, nor a refresh token as a bearer", async () => {
    const { tokens } = await member("confuse");
    expect((await failure(auth.refresh({ refreshToken: tokens.accessToken }))).reason).toBe(
      "REFRESH_TOKEN_INVALID",
    );
    expect((await failure(auth.getSession({}, bearer(tokens.refreshToken)))).code).toBe(
      Code.Unauthenticated,
    );
  });
});

describe("sessions", () => {
  it("SECURITY.md 11: logout ends the session at once: refresh fails and the access token is refused", async () => {
    const { tokens } = await member("logout");
    await auth.logout({}, bearer(tokens.accessToken));
    expect((await failure(auth.refresh({ refreshToken: tokens.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await failure(auth.getSession({}, bearer(tokens.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("lists the caller's live sessions, pages through them, and revokes one", async () => {
    const { email, tokens } = await member("list");
    const second = (await auth.login({ email, password, workspaceId: defaultWorkspaceId })).result
      .value as typeof tokens;
    const third = (await auth.login({ email, password, workspaceId: defaultWorkspaceId })).result
      .value as typeof tokens;
    const page1 = await auth.listSessions({ pageSize: 2 }, bearer(tokens.accessToken));
    expect(page1.sessions).toHaveLength(2);
    expect(page1.nextPageToken).not.toBe("");
    const page2 = await auth.listSessions(
      { pageSize: 2, pageToken: page1.nextPageToken },
      bearer(tokens.accessToken),
    );
    const ids = [...page1.sessions, ...page2.sessions].map((s) => s.id).sort();
    expect(ids).toEqual([tokens.sessionId, second.sessionId, third.sessionId].sort());
    expect(page2.nextPageToken).toBe("");
    expect(
      [...page1.sessions, ...page2.sessions].filter((s) => s.current).map((s) => s.id),
    ).toEqual([tokens.sessionId]);

    await auth.revokeSession({ sessionId: third.sessionId }, bearer(tokens.accessToken));
    expect((await failure(auth.refresh({ refreshToken: third.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
    const after = await auth.listSessions({}, bearer(tokens.accessToken));
    expect(after.sessions.map((s) => s.id)).not.toContain(third.sessionId);
    const bad = await failure(
      auth.listSessions({ pageToken: "garbage" }, bearer(tokens.accessToken)),
    );
    expect(bad.reason).toBe("INVALID_PAGE_TOKEN");
  });

  it("SECURITY.md 21: another user's session cannot be revoked (NOT_FOUND)", async () => {
    const a = await member("ownera");
    const b = await member("ownerb");
    const f = await failure(
      auth.revokeSession({ sessionId: b.tokens.sessionId }, bearer(a.tokens.accessToken)),
    );
    expect(f.code).toBe(Code.NotFound);
    expect((await auth.refresh({ refreshToken: b.tokens.refreshToken })).tokens).toBeDefined();
  });
});

describe("workspaces and tenant isolation", () => {
  it("SECURITY.md 21: a workspace A token with x-workspace-id of workspace B is PERMISSION_DENIED", async () => {
    const owner = uniqueEmail("tenant");
    const slug = `tenant-${counter}`;
    await auth.signUp({ email: owner, password, workspaceName: "Tenant", workspaceSlug: slug });
    const res = await auth.login({ email: owner, password, workspaceSlug: slug });
    const tokens = res.result.value as { accessToken: string; workspaceId: string };
    const f = await failure(auth.getSession({}, bearer(tokens.accessToken, defaultWorkspaceId)));
    expect(f.code).toBe(Code.PermissionDenied);
    expect(f.reason).toBe("WORKSPACE_MISMATCH");
    // A header that names no workspace at all is the caller's mistake, named as such.
    const malformed = await failure(auth.getSession({}, bearer(tokens.accessToken, "not-a-uuid")));
    expect(malformed.code).toBe(Code.InvalidArgument);
    expect(malformed.fields).toEqual(["x-workspace-id"]);
    const sw = await failure(
      auth.switchWorkspace({ workspaceId: defaultWorkspaceId }, bearer(tokens.accessToken)),
    );
    expect(sw.code).toBe(Code.PermissionDenied);
    expect(sw.reason).toBe("MEMBERSHIP_INACTIVE");
  });

  it("lists the user's workspaces and switches between them without the password", async () => {
    const { email, tokens } = await member("switch");
    const slug = `second-${counter}`;
    await keygate.database.pool.transaction(async (tx) => {
      const ws = await tx.one(sql.type(z.object({ id: z.string() }))`
        INSERT INTO workspaces (name, slug) VALUES ('Second', ${slug}) RETURNING id`);
      await tx.query(sql.unsafe`
        INSERT INTO workspace_members (workspace_id, user_id, role)
        SELECT ${ws.id}, id, 'admin' FROM users WHERE email = ${email}`);
    });
    const mine = await auth.listMyWorkspaces({}, bearer(tokens.accessToken));
    expect(mine.memberships.map((m) => m.workspace?.slug).sort()).toEqual(["default", slug].sort());
    const target = mine.memberships.find((m) => m.workspace?.slug === slug);
    const switched = await auth.switchWorkspace(
      { workspaceId: target?.workspaceId as string },
      bearer(tokens.accessToken),
    );
    expect(switched.tokens?.workspaceId).toBe(target?.workspaceId);
    expect(switched.tokens?.role).toBe(Role.ADMIN);
    const me = await auth.getSession({}, bearer(switched.tokens?.accessToken as string));
    expect(me.workspace?.slug).toBe(slug);
  });
});

describe("passwords", () => {
  it("SECURITY.md 4: changing the password needs the current one, ends the other sessions and sends a notice", async () => {
    const { email, tokens } = await member("change");
    const other = (await auth.login({ email, password, workspaceId: defaultWorkspaceId })).result
      .value as typeof tokens;
    const wrong = await failure(
      auth.changePassword(
        { currentPassword: "nope nope nope", newPassword: "a brand new passphrase" },
        bearer(tokens.accessToken),
      ),
    );
    expect(wrong.code).toBe(Code.PermissionDenied);
    expect(wrong.reason).toBe("CURRENT_PASSWORD_INVALID");
    await auth.changePassword(
      { currentPassword: password, newPassword: "a brand new passphrase" },
      bearer(tokens.accessToken),
    );
    expect((await failure(auth.refresh({ refreshToken: other.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await auth.getSession({}, bearer(tokens.accessToken))).user?.email).toBe(email);
    expect(
      (await failure(auth.login({ email, password, workspaceId: defaultWorkspaceId }))).reason,
    ).toBe("INVALID_CREDENTIALS");
    const notice = await smtp.waitFor(
      (m) =>
        m.to.includes(email) &&
        /password/i.test(m.raw) &&
        !/verify/i.test(m.raw.split("\n").find((l) => l.startsWith("Subject:")) ?? ""),
    );
    expect(notice.raw).not.toContain("a brand new passphrase");
  });

  it("SECURITY.md 4, 16: reset by link from the public URL ends every session and does not log in", async () => {
    const { email, tokens } = await member("reset");
    await auth.requestPasswordReset({ email, workspaceId: defaultWorkspaceId });
    const link = linkIn(
      await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("reset-password")),
    );
    expect(link.url.startsWith(`${publicUrl}/reset-password?token=`)).toBe(true);
    const res = await auth.resetPassword({
      proof: { case: "token", value: link.token },
      newPassword: "reset to this one",
    });
    expect(res).toBeDefined();
    expect((await failure(auth.refresh({ refreshToken: tokens.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
    expect(
      (await auth.login({ email, password: "reset to this one", workspaceId: defaultWorkspaceId }))
        .result.case,
    ).toBe("tokens");
    const again = await failure(
      auth.resetPassword({
        proof: { case: "token", value: link.token },
        newPassword: "and again this one",
      }),
    );
    expect(again.reason).toBe("CODE_INVALID");
  });

  it("SECURITY.md 17: a reset request for an unknown address answers the same and sends nothing", async () => {
    const before = smtp.received.length;
    const nobody = uniqueEmail("ghost");
    await auth.requestPasswordReset({ email: nobody, workspaceId: defaultWorkspaceId });
    await new Promise((r) => setTimeout(r, 300));
    expect(smtp.received.slice(before).some((m) => m.to.includes(nobody))).toBe(false);
  });
});

describe("magic links and codes", () => {
  it("a magic link signs in once", async () => {
    const { email } = await member("magic");
    await auth.requestMagicLink({ email, workspaceId: defaultWorkspaceId });
    const link = linkIn(
      await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("magic-link")),
    );
    expect(link.url.startsWith(`${publicUrl}/magic-link?token=`)).toBe(true);
    const res = await auth.consumeMagicLink({ token: link.token });
    expect(res.tokens?.accessToken).toBeTruthy();
    expect((await failure(auth.consumeMagicLink({ token: link.token }))).reason).toBe(
      "CODE_INVALID",
    );
  });

  it("SECURITY.md 13: of two concurrent uses of one link exactly one succeeds", async () => {
    const { email } = await member("twice");
    await auth.requestMagicLink({ email, workspaceId: defaultWorkspaceId });
    const link = linkIn(
      await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("magic-link")),
    );
    const results = await Promise.allSettled([
      auth.consumeMagicLink({ token: link.token }),
      auth.consumeMagicLink({ token: link.token }),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
  });

  it("SECURITY.md 6, 14: a reset link is not accepted as a magic link", async () => {
    const { email } = await member("purpose");
    await auth.requestPasswordReset({ email, workspaceId: defaultWorkspaceId });
    const link = linkIn(
      await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("reset-password")),
    );
    expect((await failure(auth.consumeMagicLink({ token: link.token }))).reason).toBe(
      "CODE_INVALID",
    );
  });

  it("SECURITY.md 15: five wrong attempts kill the code, even for the right value afterwards", async () => {
    const email = uniqueEmail("attempts");
    await auth.signUp({ email, password }, inWorkspace(defaultWorkspaceId));
    const code = codeIn(await smtp.waitFor((m) => m.to.includes(email)));
    const wrongCode = code === "000000" ? "111111" : "000000";
    for (let i = 0; i < 5; i++) {
      const f = await failure(
        auth.verifyEmail({
          proof: {
            case: "code",
            value: { email, code: wrongCode, workspaceId: defaultWorkspaceId },
          },
        }),
      );
      expect(f.reason).toBe("CODE_INVALID");
    }
    const right = await failure(
      auth.verifyEmail({
        proof: { case: "code", value: { email, code, workspaceId: defaultWorkspaceId } },
      }),
    );
    expect(right.reason).toBe("CODE_INVALID");
  });

  it("SECURITY.md 13: a new code replaces the previous one", async () => {
    const email = uniqueEmail("replace");
    await auth.signUp({ email, password }, inWorkspace(defaultWorkspaceId));
    const first = codeIn(await smtp.waitFor((m) => m.to.includes(email)));
    const count = smtp.received.filter((m) => m.to.includes(email)).length;
    await auth.sendEmailVerification({ email, workspaceId: defaultWorkspaceId });
    await smtp.waitFor(
      (m) =>
        m.to.includes(email) && smtp.received.filter((x) => x.to.includes(email)).length > count,
    );
    const f = await failure(
      auth.verifyEmail({
        proof: { case: "code", value: { email, code: first, workspaceId: defaultWorkspaceId } },
      }),
    );
    // The first code is dead, unless the CSPRNG drew the same six digits twice.
    const second = codeIn(
      smtp.received.filter((m) => m.to.includes(email)).at(-1) as (typeof smtp.received)[number],
    );
    if (second !== first) expect(f.reason).toBe("CODE_INVALID");
  });

  it("a flow switched off for the workspace answers NOT_FOUND", async () => {
    const { email } = await member("flags");
    await keygate.database.pool.query(sql.unsafe`
      UPDATE workspaces SET settings = settings || '{"magic_link": false, "reset_password": false}'::jsonb
      WHERE id = ${defaultWorkspaceId}`);
    try {
      expect(
        (await failure(auth.requestMagicLink({ email, workspaceId: defaultWorkspaceId }))).code,
      ).toBe(Code.NotFound);
      expect(
        (await failure(auth.requestPasswordReset({ email, workspaceId: defaultWorkspaceId }))).code,
      ).toBe(Code.NotFound);
    } finally {
      await keygate.database.pool.query(sql.unsafe`
        UPDATE workspaces SET settings = settings - 'magic_link' - 'reset_password' WHERE id = ${defaultWorkspaceId}`);
    }
  });
});

describe("settings-driven flows", () => {
  async function withSettings<T>(settings: object, fn: () => Promise<T>): Promise<T> {
    const keys = Object.keys(settings);
    await keygate.database.pool.query(sql.unsafe`
      UPDATE workspaces SET settings = settings || ${sql.jsonb(settings as Record<string, boolean>)}
      WHERE id = ${defaultWorkspaceId}`);
    try {
      return await fn();
    } finally {
      await keygate.database.pool.query(sql.unsafe`
        UPDATE workspaces SET settings = settings - ${sql.array(keys, "text")} WHERE id = ${defaultWorkspaceId}`);
    }
  }

  it("verifies the address by link when the workspace says link", async () => {
    await withSettings({ email_verification: "link" }, async () => {
      const email = uniqueEmail("vlink");
      await auth.signUp({ email, password }, inWorkspace(defaultWorkspaceId));
      const link = linkIn(
        await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("verify-email")),
      );
      expect(link.url.startsWith(`${publicUrl}/verify-email?token=`)).toBe(true);
      await auth.verifyEmail({ proof: { case: "token", value: link.token } });
      const res = await auth.login({ email, password, workspaceId: defaultWorkspaceId });
      const me = await auth.getSession(
        {},
        bearer((res.result.value as { accessToken: string }).accessToken),
      );
      expect(me.user?.emailVerified).toBe(true);
    });
  });

  it("resets by code when the workspace says code", async () => {
    await withSettings({ password_reset: "code" }, async () => {
      const { email } = await member("rcode");
      await auth.requestPasswordReset({ email, workspaceId: defaultWorkspaceId });
      const mail = await smtp.waitFor(
        (m) => m.to.includes(email) && /reset/i.test(m.raw) && /^ {4}\d{6}\r?$/m.test(m.raw),
      );
      await auth.resetPassword({
        proof: {
          case: "code",
          value: { email, code: codeIn(mail), workspaceId: defaultWorkspaceId },
        },
        newPassword: "fresh password by code",
      });
      expect(
        (
          await auth.login({
            email,
            password: "fresh password by code",
            workspaceId: defaultWorkspaceId,
          })
        ).result.case,
      ).toBe("tokens");
    });
  });

  it("refuses an unverified address only after the password checked out", async () => {
    await withSettings({ require_email_verification: true }, async () => {
      const email = uniqueEmail("unverified");
      const res = await auth.signUp({ email, password }, inWorkspace(defaultWorkspaceId));
      expect(res.emailVerificationRequired).toBe(true);
      const right = await failure(auth.login({ email, password, workspaceId: defaultWorkspaceId }));
      expect(right.code).toBe(Code.FailedPrecondition);
      expect(right.reason).toBe("EMAIL_NOT_VERIFIED");
      const wrong = await failure(
        auth.login({ email, password: "wrong password here", workspaceId: defaultWorkspaceId }),
      );
      expect(wrong.reason).toBe("INVALID_CREDENTIALS");
    });
  });
});

describe("accounts", () => {
  it("SECURITY.md 17: a blocked account looks like a wrong password, and its sessions stop", async () => {
    const { email, tokens } = await member("blocked");
    await keygate.database.pool.query(
      sql.unsafe`UPDATE users SET blocked = true WHERE email = ${email}`,
    );
    const blocked = await failure(auth.login({ email, password, workspaceId: defaultWorkspaceId }));
    const wrong = await failure(
      auth.login({ email: uniqueEmail("none"), password, workspaceId: defaultWorkspaceId }),
    );
    expect(blocked.reason).toBe("INVALID_CREDENTIALS");
    expect(blocked.error.rawMessage).toBe(wrong.error.rawMessage);
    expect((await failure(auth.getSession({}, bearer(tokens.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await failure(auth.refresh({ refreshToken: tokens.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("SECURITY.md 2: a stored hash of another cost is upgraded at the next login", async () => {
    const { email } = await member("rehash");
    const { PasswordHasher } = await import("../src/crypto/password.js");
    const old = new PasswordHasher({ cost: 11, workers: 1 });
    try {
      const hash = await old.hash(password);
      await keygate.database.pool.query(
        sql.unsafe`UPDATE users SET password_hash = ${hash} WHERE email = ${email}`,
      );
    } finally {
      await old.close();
    }
    await auth.login({ email, password, workspaceId: defaultWorkspaceId });
    const stored = await keygate.database.pool.oneFirst(
      sql.type(
        z.object({ h: z.string() }),
      )`SELECT password_hash AS h FROM users WHERE email = ${email}`,
    );
    expect(stored.startsWith(`$2b$${String(keygate.config.bcryptCost).padStart(2, "0")}$`)).toBe(
      true,
    );
    expect(
      (await auth.login({ email, password, workspaceId: defaultWorkspaceId })).result.case,
    ).toBe("tokens");
  });

  it("SECURITY.md 23: the audit log records the flows with ip and user agent, and never a secret", async () => {
    const { email, tokens } = await member("audited");
    await failure(
      auth.login({ email, password: "a wrong password", workspaceId: defaultWorkspaceId }),
    );
    await auth.refresh({ refreshToken: tokens.refreshToken });
    await auth.logout({}, bearer(tokens.accessToken));
    const rows = await keygate.database.pool.any(sql.type(
      z.object({
        type: z.string(),
        ip_address: z.string().nullable(),
        user_agent: z.string().nullable(),
        all: z.string(),
      }),
    )`
      SELECT type, ip_address, user_agent, e::text AS all FROM audit_events e
      WHERE user_id = (SELECT id FROM users WHERE email = ${email}) ORDER BY created_at`);
    expect(rows.map((r) => r.type)).toEqual(
      expect.arrayContaining(["signup", "login_succeeded", "login_failed", "refresh", "logout"]),
    );
    for (const row of rows) {
      expect(row.ip_address).toBe("127.0.0.1");
      expect(row.user_agent).toMatch(/connect-es/);
      expect(row.all).not.toContain(password);
      expect(row.all).not.toContain(tokens.refreshToken);
      expect(row.all).not.toContain(tokens.accessToken);
    }
  });
});

describe("identity across workspaces", () => {
  it("SECURITY.md 4: a password change in one workspace ends the user's sessions in the others", async () => {
    const { email, tokens } = await member("across");
    const slug = `across-${counter}`;
    await keygate.database.pool.transaction(async (tx) => {
      const ws = await tx.oneFirst(sql.type(z.object({ id: z.string() }))`
        INSERT INTO workspaces (name, slug) VALUES ('Across', ${slug}) RETURNING id`);
      await tx.query(sql.unsafe`
        INSERT INTO workspace_members (workspace_id, user_id, role)
        SELECT ${ws}, id, 'member' FROM users WHERE email = ${email}`);
    });
    const mine = await auth.listMyWorkspaces({}, bearer(tokens.accessToken));
    const other = mine.memberships.find((m) => m.workspace?.slug === slug)?.workspaceId as string;
    const there = (await auth.switchWorkspace({ workspaceId: other }, bearer(tokens.accessToken)))
      .tokens;
    await auth.changePassword(
      { currentPassword: password, newPassword: "another fine passphrase" },
      bearer(tokens.accessToken),
    );
    expect(
      (await failure(auth.refresh({ refreshToken: there?.refreshToken as string }))).code,
    ).toBe(Code.Unauthenticated);
    expect((await failure(auth.getSession({}, bearer(there?.accessToken as string)))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await auth.getSession({}, bearer(tokens.accessToken))).user?.email).toBe(email);
  });
});
