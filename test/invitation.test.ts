import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { MembershipStatus, Role } from "../gen/keygate/v1/types_pb.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { linkIn, startSmtpServer } from "./support/smtp.js";

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let ws: string;
let key: { headers: Record<string, string> };
const publicUrl = "https://app.example.test";

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({ KEYGATE_SMTP_URL: smtp.url, KEYGATE_PUBLIC_URL: publicUrl });
  ws = keygate.bootstrapped?.workspaceId as string;
  key = { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } };
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

async function reason(p: Promise<unknown>) {
  const e = ConnectError.from(
    await p.then(
      () => new Error("expected a failure"),
      (x) => x,
    ),
  );
  return { code: e.code, reason: e.findDetails(ErrorInfoSchema)[0]?.reason };
}

describe("AddMember by email and AcceptInvitation", () => {
  it("invites a new address: a link from the public URL sets the password, once", async () => {
    const email = "invitee@example.test";
    const res = await admin.addMember({ workspaceId: ws, email, role: Role.ADMIN }, key);
    expect(res.membership?.role).toBe(Role.ADMIN);
    expect(res.membership?.status).toBe(MembershipStatus.ACTIVE);
    const link = linkIn(await smtp.waitFor((m) => m.to.includes(email)));
    expect(link.url.startsWith(`${publicUrl}/accept-invitation?token=`)).toBe(true);

    // No password yet: a login cannot succeed.
    expect(
      (await reason(auth.login({ email, password: "anything at all", workspaceId: ws }))).reason,
    ).toBe("INVALID_CREDENTIALS");
    // A refused password does not spend the invitation.
    expect(
      (await reason(auth.acceptInvitation({ token: link.token, password: "password1" }))).code,
    ).toBe(Code.InvalidArgument);
    const accepted = await auth.acceptInvitation({
      token: link.token,
      password: "my own good passphrase",
    });
    expect(accepted.tokens?.workspaceId).toBe(ws);
    expect(accepted.tokens?.role).toBe(Role.ADMIN);
    const me = await auth.getSession(
      {},
      { headers: { authorization: `Bearer ${accepted.tokens?.accessToken}` } },
    );
    expect(me.user?.emailVerified).toBe(true);
    expect(
      (await auth.login({ email, password: "my own good passphrase", workspaceId: ws })).result
        .case,
    ).toBe("tokens");
    expect(
      (await reason(auth.acceptInvitation({ token: link.token, password: "another passphrase" })))
        .reason,
    ).toBe("CODE_INVALID");
  });

  it("adds an account that proved its address at once, without an invitation", async () => {
    const email = "existing-member@example.test";
    await auth.signUp(
      { email, password: "correct horse battery staple" },
      { headers: { "x-workspace-id": ws } },
    );
    const { users } = await admin.listUsers({ emailPrefix: email }, key);
    await admin.markEmailVerified({ userId: users[0]?.id as string }, key);
    const other = await admin.createWorkspace({ name: "Other", slug: "other-invites" }, key);
    const before = smtp.received.length;
    const res = await admin.addMember({ workspaceId: other.workspace?.id as string, email }, key);
    expect(res.membership?.role).toBe(Role.MEMBER);
    await new Promise((r) => setTimeout(r, 300));
    expect(
      smtp.received
        .slice(before)
        .some((m) => m.to.includes(email) && m.raw.includes("accept-invitation")),
    ).toBe(false);
    expect(
      (
        await auth.login({
          email,
          password: "correct horse battery staple",
          workspaceId: other.workspace?.id,
        })
      ).result.case,
    ).toBe("tokens");
  });

  it("SECURITY.md 28: invites an account whose password nobody tied to the mailbox; that password does not open the workspace", async () => {
    const email = "unproven-member@example.test";
    const squatted = "a password someone else chose";
    await auth.signUp({ email, password: squatted }, { headers: { "x-workspace-id": ws } });
    const other = await admin.createWorkspace({ name: "Third", slug: "third-invites" }, key);
    const otherId = other.workspace?.id as string;
    await admin.addMember({ workspaceId: otherId, email }, key);
    const link = linkIn(
      await smtp.waitFor((m) => m.to.includes(email) && m.raw.includes("accept-invitation")),
    );
    expect(
      (await reason(auth.login({ email, password: squatted, workspaceId: otherId }))).code,
    ).toBe(Code.FailedPrecondition);
    // Whoever reads the mailbox sets the password; the one from before opens nothing now.
    const accepted = await auth.acceptInvitation({
      token: link.token,
      password: "mine, from my inbox",
    });
    expect(accepted.tokens?.workspaceId).toBe(otherId);
    expect((await reason(auth.login({ email, password: squatted, workspaceId: ws }))).reason).toBe(
      "INVALID_CREDENTIALS",
    );
    expect(
      (await auth.login({ email, password: "mine, from my inbox", workspaceId: ws })).result.case,
    ).toBe("tokens");
  });

  it("needs a user id or a valid email", async () => {
    expect((await reason(admin.addMember({ workspaceId: ws }, key))).code).toBe(
      Code.InvalidArgument,
    );
    expect(
      (await reason(admin.addMember({ workspaceId: ws, email: "not-an-email" }, key))).code,
    ).toBe(Code.InvalidArgument);
  });
});
