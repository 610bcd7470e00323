import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import {
  AuditOutcome,
  MembershipStatus,
  OtpLoginMode,
  PasswordResetMode,
  Role,
} from "../gen/keygate/v1/types_pb.js";
import { generateAdminKey } from "../src/crypto/admin-key.js";
import { sql } from "../src/db/sql.js";
import { insertAdminKey } from "../src/repositories/admin-keys.js";
import { failure } from "./support/failure.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

let keygate: TestKeygate;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let adminKey: string;
let defaultWorkspaceId: string;

const password = "correct horse battery staple";
let counter = 0;
const unique = (tag: string) => `${tag}-${Date.now().toString(36)}-${++counter}`;
const uniqueEmail = (tag: string) => `${unique(tag)}@example.test`;

beforeAll(async () => {
  keygate = await startTestKeygate();
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  adminKey = keygate.bootstrapped?.adminKey as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  auth = createClient(AuthService, transport);
  admin = createClient(AdminService, transport);
});
afterAll(async () => {
  await keygate?.stop();
});

const bearer = (token: string, workspaceId?: string) => ({
  headers: {
    authorization: `Bearer ${token}`,
    ...(workspaceId ? { "x-workspace-id": workspaceId } : {}),
  },
});
const asAdmin = () => bearer(adminKey);

/**
 * Signs a user up in the default workspace and proves their address (so that adding them
 * elsewhere leaves their password alone); answers their id and tokens there.
 */
async function user(tag: string) {
  const email = uniqueEmail(tag);
  await auth.signUp({ email, password }, { headers: { "x-workspace-id": defaultWorkspaceId } });
  const tokens = await login(email, defaultWorkspaceId);
  await admin.markEmailVerified({ userId: tokens.userId }, asAdmin());
  return { email, id: tokens.userId, tokens };
}

async function login(email: string, workspaceId: string) {
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  return res.result.value;
}

/** A new workspace owned by a new user, who is signed in to it. */
async function ownedWorkspace(tag: string) {
  const owner = await user(`${tag}-owner`);
  const res = await admin.createWorkspace(
    { name: `Workspace ${tag}`, slug: unique(tag), ownerUserId: owner.id },
    asAdmin(),
  );
  const workspace = res.workspace as NonNullable<typeof res.workspace>;
  const tokens = await login(owner.email, workspace.id);
  return { workspace, owner: { ...owner, tokens } };
}

/** Adds a user to the workspace with a role and signs them in there. */
async function memberOf(workspaceId: string, role: Role, tag = "member") {
  const u = await user(tag);
  await admin.addMember({ workspaceId, userId: u.id, role }, asAdmin());
  return { ...u, tokens: await login(u.email, workspaceId) };
}

/** A workspace-scoped admin key, created directly in the database. */
async function workspaceKey(workspaceId: string, role: "admin" | "read_only" = "admin") {
  const key = generateAdminKey();
  await insertAdminKey(keygate.database.pool, {
    workspaceId,
    name: "test key",
    prefix: key.prefix,
    hash: key.hash,
    role,
    introspect: false,
    createdBy: "test",
  });
  return key.secret;
}

describe("workspaces", () => {
  it("creates, reads, lists, renames and deletes a workspace with its effective settings", async () => {
    const slug = unique("crud");
    const created = await admin.createWorkspace(
      {
        name: "Crud Inc",
        slug,
        settings: { passwordMinLength: 12, otpLogin: OtpLoginMode.OPTIONAL },
      },
      asAdmin(),
    );
    const id = created.workspace?.id as string;
    expect(created.workspace?.slug).toBe(slug);
    expect(created.settings?.passwordMinLength).toBe(12);
    expect(created.settings?.otpLogin).toBe(OtpLoginMode.OPTIONAL);
    expect(created.settings?.signup).toBe(true);
    expect(created.settings?.passwordReset).toBe(PasswordResetMode.LINK);

    const got = await admin.getWorkspace({ workspaceId: id }, asAdmin());
    expect(got.workspace?.name).toBe("Crud Inc");
    expect(got.settings?.passwordMinLength).toBe(12);
    expect(got.settings?.accessTokenTtlSeconds).toBe(900);

    const listed = await admin.listWorkspaces({ slugPrefix: slug }, asAdmin());
    expect(listed.workspaces.map((w) => w.id)).toEqual([id]);

    const newSlug = unique("renamed");
    const updated = await admin.updateWorkspace(
      { workspaceId: id, name: "Renamed", slug: newSlug },
      asAdmin(),
    );
    expect(updated.workspace?.name).toBe("Renamed");
    expect(updated.workspace?.slug).toBe(newSlug);
    const nameOnly = await admin.updateWorkspace({ workspaceId: id, name: "Again" }, asAdmin());
    expect(nameOnly.workspace?.slug).toBe(newSlug);

    await admin.deleteWorkspace({ workspaceId: id }, asAdmin());
    const gone = await failure(admin.getWorkspace({ workspaceId: id }, asAdmin()));
    expect(gone.code).toBe(Code.NotFound);
    expect((await failure(admin.deleteWorkspace({ workspaceId: id }, asAdmin()))).code).toBe(
      Code.NotFound,
    );
  });

  it("lists every workspace exactly once across pages, in a stable order", async () => {
    const prefix = unique("page");
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await admin.createWorkspace({ name: `P${i}`, slug: `${prefix}-${i}` }, asAdmin());
      ids.push(res.workspace?.id as string);
    }
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await admin.listWorkspaces(
        { slugPrefix: prefix, pageSize: 2, pageToken },
        asAdmin(),
      );
      expect(page.workspaces.length).toBeLessThanOrEqual(2);
      seen.push(...page.workspaces.map((w) => w.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual([...ids].sort());
    const bad = await failure(admin.listWorkspaces({ pageToken: "garbage" }, asAdmin()));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.reason).toBe("INVALID_PAGE_TOKEN");
  });

  it("answers a taken slug with ALREADY_EXISTS naming the field", async () => {
    const slug = unique("taken");
    await admin.createWorkspace({ name: "First", slug }, asAdmin());
    const dup = await failure(admin.createWorkspace({ name: "Second", slug }, asAdmin()));
    expect(dup.code).toBe(Code.AlreadyExists);
    expect(dup.reason).toBe("ALREADY_EXISTS");
    expect(dup.fields).toEqual(["slug"]);

    const other = await admin.createWorkspace({ name: "Other", slug: unique("other") }, asAdmin());
    const rename = await failure(
      admin.updateWorkspace({ workspaceId: other.workspace?.id as string, slug }, asAdmin()),
    );
    expect(rename.code).toBe(Code.AlreadyExists);
    expect(rename.fields).toEqual(["slug"]);
  });

  it("SECURITY.md 22: malformed input is INVALID_ARGUMENT with the field", async () => {
    const bad = await failure(
      admin.createWorkspace({ name: "", slug: "Not A Slug", ownerUserId: "nope" }, asAdmin()),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.fields).toEqual(["name", "slug", "owner_user_id"]);
    for (const call of [
      () => admin.getWorkspace({ workspaceId: "not-a-uuid" }, asAdmin()),
      () => admin.deleteWorkspace({ workspaceId: "" }, asAdmin()),
      () => admin.listMembers({ workspaceId: "x" }, asAdmin()),
      () => admin.addMember({ workspaceId: defaultWorkspaceId, userId: "x" }, asAdmin()),
      () => admin.listAuditEvents({ userId: "x" }, asAdmin()),
      () => admin.listWorkspaces({ slugPrefix: "%" }, asAdmin()),
    ]) {
      expect((await failure(call())).code).toBe(Code.InvalidArgument);
    }
    const role = await failure(
      admin.addMember(
        { workspaceId: defaultWorkspaceId, userId: defaultWorkspaceId, role: 42 as Role },
        asAdmin(),
      ),
    );
    expect(role.fields).toEqual(["role"]);
    const time = await failure(
      admin.listAuditEvents(
        { startTime: timestampFromMs(2_000), endTime: timestampFromMs(1_000) },
        asAdmin(),
      ),
    );
    expect(time.fields).toEqual(["end_time"]);
  });

  it("refuses out-of-range settings with INVALID_ARGUMENT naming the field", async () => {
    const create1 = await failure(
      admin.createWorkspace(
        { name: "Bad", slug: unique("bad"), settings: { passwordMinLength: 4 } },
        asAdmin(),
      ),
    );
    expect(create1.code).toBe(Code.InvalidArgument);
    expect(create1.fields).toEqual(["settings.password_min_length"]);

    const upd = await failure(
      admin.updateWorkspaceSettings(
        {
          workspaceId: defaultWorkspaceId,
          settings: { accessTokenTtlSeconds: 5, otpLogin: 99 as OtpLoginMode },
        },
        asAdmin(),
      ),
    );
    expect(upd.code).toBe(Code.InvalidArgument);
    expect(upd.fields.sort()).toEqual(["settings.access_token_ttl_seconds", "settings.otp_login"]);

    const mask = await failure(
      admin.updateWorkspaceSettings(
        {
          workspaceId: defaultWorkspaceId,
          resetMask: create(FieldMaskSchema, { paths: ["otp_ttl"] }),
        },
        asAdmin(),
      ),
    );
    expect(mask.fields).toEqual(["reset_mask.paths"]);
  });

  it("merges settings, and the reset mask returns fields to the server defaults", async () => {
    const { workspace } = await ownedWorkspace("settings");
    const first = await admin.updateWorkspaceSettings(
      { workspaceId: workspace.id, settings: { signup: false, passwordMinLength: 10 } },
      asAdmin(),
    );
    expect(first.settings?.signup).toBe(false);
    expect(first.settings?.passwordMinLength).toBe(10);
    const second = await admin.updateWorkspaceSettings(
      { workspaceId: workspace.id, settings: { magicLink: false } },
      asAdmin(),
    );
    expect(second.settings?.signup).toBe(false);
    expect(second.settings?.magicLink).toBe(false);
    const reset = await admin.updateWorkspaceSettings(
      {
        workspaceId: workspace.id,
        resetMask: create(FieldMaskSchema, { paths: ["signup", "password_min_length"] }),
      },
      asAdmin(),
    );
    expect(reset.settings?.signup).toBe(true);
    expect(reset.settings?.passwordMinLength).toBe(8);
    expect(reset.settings?.magicLink).toBe(false);
    const got = await admin.getWorkspace({ workspaceId: workspace.id }, asAdmin());
    expect(got.settings?.signup).toBe(true);
    expect(got.settings?.magicLink).toBe(false);
  });

  it("SECURITY.md 11: deleting a workspace kills its tokens at once", async () => {
    const { workspace, owner } = await ownedWorkspace("doomed");
    const m = await memberOf(workspace.id, Role.MEMBER);
    await auth.getSession({}, bearer(m.tokens.accessToken));
    await admin.deleteWorkspace({ workspaceId: workspace.id }, asAdmin());
    for (const t of [owner.tokens, m.tokens]) {
      expect((await failure(auth.getSession({}, bearer(t.accessToken)))).code).toBe(
        Code.Unauthenticated,
      );
      expect((await failure(auth.refresh({ refreshToken: t.refreshToken }))).code).toBe(
        Code.Unauthenticated,
      );
    }
    // The member's session in the default workspace is untouched.
    await auth.getSession({}, bearer((await login(m.email, defaultWorkspaceId)).accessToken));
  });

  it("lets the owner, and no one else in the workspace, delete it with their token", async () => {
    const { workspace, owner } = await ownedWorkspace("selfdelete");
    const adm = await memberOf(workspace.id, Role.ADMIN, "ws-admin");
    const denied = await failure(
      admin.deleteWorkspace({ workspaceId: workspace.id }, bearer(adm.tokens.accessToken)),
    );
    expect(denied.code).toBe(Code.PermissionDenied);
    const other = await ownedWorkspace("bystander");
    expect(
      (
        await failure(
          admin.deleteWorkspace(
            { workspaceId: workspace.id },
            bearer(other.owner.tokens.accessToken),
          ),
        )
      ).code,
    ).toBe(Code.PermissionDenied);
    await admin.deleteWorkspace({ workspaceId: workspace.id }, bearer(owner.tokens.accessToken));
    expect((await failure(admin.getWorkspace({ workspaceId: workspace.id }, asAdmin()))).code).toBe(
      Code.NotFound,
    );
  });
});

describe("members", () => {
  it("adds, updates, lists and removes members", async () => {
    const { workspace, owner } = await ownedWorkspace("members");
    const u = await user("joiner");
    const added = await admin.addMember(
      { workspaceId: workspace.id, userId: u.id, role: Role.ADMIN },
      asAdmin(),
    );
    expect(added.membership?.role).toBe(Role.ADMIN);
    expect(added.membership?.status).toBe(MembershipStatus.ACTIVE);
    const again = await failure(
      admin.addMember({ workspaceId: workspace.id, userId: u.id }, asAdmin()),
    );
    expect(again.code).toBe(Code.AlreadyExists);
    const ghost = await failure(
      admin.addMember(
        { workspaceId: workspace.id, userId: "00000000-0000-4000-8000-000000000000" },
        asAdmin(),
      ),
    );
    expect(ghost.code).toBe(Code.NotFound);

    const updated = await admin.updateMember(
      { workspaceId: workspace.id, userId: u.id, role: Role.MEMBER },
      asAdmin(),
    );
    expect(updated.membership?.role).toBe(Role.MEMBER);
    expect(updated.membership?.status).toBe(MembershipStatus.ACTIVE);

    const list = await admin.listMembers({ workspaceId: workspace.id }, asAdmin());
    expect(list.memberships.map((m) => m.userId)).toEqual([owner.id, u.id].sort());
    expect(list.memberships.find((m) => m.userId === u.id)?.user?.email).toBe(u.email);

    await admin.removeMember({ workspaceId: workspace.id, userId: u.id }, asAdmin());
    const after = await admin.listMembers({ workspaceId: workspace.id }, asAdmin());
    expect(after.memberships.map((m) => m.userId)).toEqual([owner.id]);
    expect(
      (await failure(admin.removeMember({ workspaceId: workspace.id, userId: u.id }, asAdmin())))
        .code,
    ).toBe(Code.NotFound);
  });

  it("pages through members in a stable order", async () => {
    const { workspace } = await ownedWorkspace("member-pages");
    for (let i = 0; i < 4; i++) await memberOf(workspace.id, Role.MEMBER, `pm${i}`);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await admin.listMembers(
        { workspaceId: workspace.id, pageSize: 2, pageToken },
        asAdmin(),
      );
      seen.push(...page.memberships.map((m) => m.userId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toHaveLength(5);
    expect(seen).toEqual([...new Set(seen)].sort());
  });

  it("SECURITY.md 11: disabling a member ends their session at once", async () => {
    const { workspace } = await ownedWorkspace("disable");
    const m = await memberOf(workspace.id, Role.MEMBER);
    await auth.getSession({}, bearer(m.tokens.accessToken));
    const res = await admin.updateMember(
      { workspaceId: workspace.id, userId: m.id, status: MembershipStatus.DISABLED },
      asAdmin(),
    );
    expect(res.membership?.status).toBe(MembershipStatus.DISABLED);
    expect((await failure(auth.getSession({}, bearer(m.tokens.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await failure(auth.refresh({ refreshToken: m.tokens.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
    // Their session in another workspace lives on.
    await auth.getSession({}, bearer((await login(m.email, defaultWorkspaceId)).accessToken));
  });

  it("SECURITY.md 11: removing a member ends their session at once", async () => {
    const { workspace } = await ownedWorkspace("remove");
    const m = await memberOf(workspace.id, Role.ADMIN);
    await admin.removeMember({ workspaceId: workspace.id, userId: m.id }, asAdmin());
    expect((await failure(auth.getSession({}, bearer(m.tokens.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    expect((await failure(auth.refresh({ refreshToken: m.tokens.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
  });

  it("refuses to demote, disable or remove the last active owner (LAST_OWNER)", async () => {
    const { workspace, owner } = await ownedWorkspace("lastowner");
    const ids = { workspaceId: workspace.id, userId: owner.id };
    for (const call of [
      () => admin.updateMember({ ...ids, role: Role.ADMIN }, asAdmin()),
      () => admin.updateMember({ ...ids, status: MembershipStatus.DISABLED }, asAdmin()),
      () => admin.removeMember(ids, asAdmin()),
      () => admin.removeMember(ids, bearer(owner.tokens.accessToken)),
    ]) {
      const f = await failure(call());
      expect(f.code).toBe(Code.FailedPrecondition);
      expect(f.reason).toBe("LAST_OWNER");
    }
    // A disabled second owner does not count.
    const second = await memberOf(workspace.id, Role.OWNER, "second-owner");
    await admin.updateMember(
      { workspaceId: workspace.id, userId: second.id, status: MembershipStatus.DISABLED },
      asAdmin(),
    );
    expect((await failure(admin.removeMember(ids, asAdmin()))).reason).toBe("LAST_OWNER");
    await admin.updateMember(
      { workspaceId: workspace.id, userId: second.id, status: MembershipStatus.ACTIVE },
      asAdmin(),
    );
    // With another active owner the first may step down.
    const demoted = await admin.updateMember({ ...ids, role: Role.ADMIN }, asAdmin());
    expect(demoted.membership?.role).toBe(Role.ADMIN);
  });
});

describe("SECURITY.md 21: callers stay in their workspace", () => {
  it("a workspace-scoped admin key cannot read or change another workspace", async () => {
    const a = await ownedWorkspace("key-a");
    const b = await ownedWorkspace("key-b");
    const key = bearer(await workspaceKey(a.workspace.id));
    // Its own workspace works.
    await admin.getWorkspace({ workspaceId: a.workspace.id }, key);
    const own = await admin.listWorkspaces({}, key);
    expect(own.workspaces.map((w) => w.id)).toEqual([a.workspace.id]);
    await admin.listMembers({ workspaceId: a.workspace.id }, key);
    await admin.listAuditEvents({ workspaceId: a.workspace.id }, key);

    const bId = b.workspace.id;
    const u = await user("intruder");
    for (const call of [
      () => admin.getWorkspace({ workspaceId: bId }, key),
      () => admin.updateWorkspace({ workspaceId: bId, name: "Pwned" }, key),
      () => admin.updateWorkspaceSettings({ workspaceId: bId, settings: { signup: false } }, key),
      () => admin.deleteWorkspace({ workspaceId: bId }, key),
      () => admin.listMembers({ workspaceId: bId }, key),
      () => admin.addMember({ workspaceId: bId, userId: u.id }, key),
      () => admin.updateMember({ workspaceId: bId, userId: b.owner.id, role: Role.MEMBER }, key),
      () => admin.removeMember({ workspaceId: bId, userId: b.owner.id }, key),
      () => admin.listAuditEvents({ workspaceId: bId }, key),
      () => admin.createWorkspace({ name: "New", slug: unique("nope") }, key),
    ]) {
      expect([Code.PermissionDenied, Code.NotFound]).toContain((await failure(call())).code);
    }
    // Without a workspace it must name its own; it never sees all events.
    expect((await failure(admin.listAuditEvents({}, key))).code).toBe(Code.InvalidArgument);
    const got = await admin.getWorkspace({ workspaceId: bId }, asAdmin());
    expect(got.workspace?.name).toBe(b.workspace.name);
    expect(got.settings?.signup).toBe(true);
  });

  it("a read-only workspace key reads but does not change", async () => {
    const a = await ownedWorkspace("readonly");
    const key = bearer(await workspaceKey(a.workspace.id, "read_only"));
    await admin.getWorkspace({ workspaceId: a.workspace.id }, key);
    const f = await failure(admin.updateWorkspace({ workspaceId: a.workspace.id, name: "X" }, key));
    expect(f.code).toBe(Code.PermissionDenied);
  });

  it("an owner manages their own workspace's members with their token, not another's", async () => {
    const a = await ownedWorkspace("owner-a");
    const b = await ownedWorkspace("owner-b");
    const ownerA = bearer(a.owner.tokens.accessToken);
    const u = await user("hired");
    const added = await admin.addMember(
      { workspaceId: a.workspace.id, userId: u.id, role: Role.OWNER },
      ownerA,
    );
    expect(added.membership?.role).toBe(Role.OWNER);
    await admin.updateMember(
      { workspaceId: a.workspace.id, userId: u.id, role: Role.MEMBER },
      ownerA,
    );
    const list = await admin.listMembers({ workspaceId: a.workspace.id }, ownerA);
    expect(list.memberships).toHaveLength(2);
    await admin.removeMember({ workspaceId: a.workspace.id, userId: u.id }, ownerA);

    for (const call of [
      () => admin.listMembers({ workspaceId: b.workspace.id }, ownerA),
      () => admin.addMember({ workspaceId: b.workspace.id, userId: u.id }, ownerA),
      () => admin.removeMember({ workspaceId: b.workspace.id, userId: b.owner.id }, ownerA),
      () => admin.getWorkspace({ workspaceId: b.workspace.id }, ownerA),
      () => admin.listAuditEvents({ workspaceId: b.workspace.id }, ownerA),
    ]) {
      expect((await failure(call())).code).toBe(Code.PermissionDenied);
    }
    // x-workspace-id of another workspace does not help either.
    const mismatch = await failure(
      admin.listMembers(
        { workspaceId: b.workspace.id },
        bearer(a.owner.tokens.accessToken, b.workspace.id),
      ),
    );
    expect(mismatch.code).toBe(Code.PermissionDenied);
  });

  it("a workspace admin (user) may not make or touch owners; a member may do nothing", async () => {
    const { workspace, owner } = await ownedWorkspace("roles");
    const adm = await memberOf(workspace.id, Role.ADMIN, "role-admin");
    const mem = await memberOf(workspace.id, Role.MEMBER, "role-member");
    const u = await user("candidate");
    const asAdm = bearer(adm.tokens.accessToken);
    for (const call of [
      () => admin.addMember({ workspaceId: workspace.id, userId: u.id, role: Role.OWNER }, asAdm),
      () =>
        admin.updateMember(
          { workspaceId: workspace.id, userId: owner.id, role: Role.MEMBER },
          asAdm,
        ),
      () => admin.removeMember({ workspaceId: workspace.id, userId: owner.id }, asAdm),
    ]) {
      expect((await failure(call())).code).toBe(Code.PermissionDenied);
    }
    await admin.addMember({ workspaceId: workspace.id, userId: u.id, role: Role.MEMBER }, asAdm);

    const asMem = bearer(mem.tokens.accessToken);
    for (const call of [
      () => admin.getWorkspace({ workspaceId: workspace.id }, asMem),
      () => admin.listWorkspaces({}, asMem),
      () => admin.listMembers({ workspaceId: workspace.id }, asMem),
      () =>
        admin.updateMember({ workspaceId: workspace.id, userId: u.id, role: Role.ADMIN }, asMem),
      () => admin.listAuditEvents({ workspaceId: workspace.id }, asMem),
    ]) {
      const f = await failure(call());
      expect(f.code).toBe(Code.PermissionDenied);
      expect(f.reason).toBe("PERMISSION_DENIED");
    }
  });
});

describe("audit events", () => {
  it("names the actor of each admin change", async () => {
    const { workspace, owner } = await ownedWorkspace("actor");
    const u = await user("audited");
    await admin.addMember(
      { workspaceId: workspace.id, userId: u.id },
      bearer(owner.tokens.accessToken),
    );
    await admin.updateWorkspace({ workspaceId: workspace.id, name: "Audited" }, asAdmin());
    const events = await admin.listAuditEvents(
      {
        workspaceId: workspace.id,
        types: ["member_invited", "workspace_updated", "workspace_created"],
      },
      asAdmin(),
    );
    const keyId = await keygate.database.pool.oneFirst(sql.type(z.object({ id: z.string() }))`
      SELECT id FROM admin_keys WHERE prefix = ${keygate.bootstrapped?.adminKeyPrefix as string}`);
    const byType = new Map(events.events.map((e) => [e.type, e]));
    // The owner invites (SECURITY.md 30): the event names them and the invited account.
    expect(byType.get("member_invited")?.actor).toBe(`user:${owner.id}`);
    expect(byType.get("member_invited")?.userId).toBe(u.id);
    expect(byType.get("member_invited")?.outcome).toBe(AuditOutcome.SUCCESS);
    expect(byType.get("workspace_updated")?.actor).toBe(`admin_key:${keyId}`);
    expect(byType.get("workspace_created")?.actor).toBe(`admin_key:${keyId}`);
    // Newest first.
    expect(events.events.map((e) => e.type)).toEqual([
      "workspace_updated",
      "member_invited",
      "workspace_created",
    ]);
  });

  it("pages through every event exactly once, and filters by type, user and time", async () => {
    const { workspace, owner } = await ownedWorkspace("audit-pages");
    const members: Awaited<ReturnType<typeof memberOf>>[] = [];
    for (let i = 0; i < 4; i++) members.push(await memberOf(workspace.id, Role.MEMBER, `ap${i}`));
    for (const m of members)
      await admin.updateMember(
        { workspaceId: workspace.id, userId: m.id, role: Role.ADMIN },
        asAdmin(),
      );
    const all = await admin.listAuditEvents(
      { workspaceId: workspace.id, pageSize: 1000 },
      asAdmin(),
    );
    expect(all.nextPageToken).toBe("");
    expect(all.events.length).toBeGreaterThanOrEqual(13);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await admin.listAuditEvents(
        { workspaceId: workspace.id, pageSize: 3, pageToken },
        asAdmin(),
      );
      expect(page.events.length).toBeLessThanOrEqual(3);
      seen.push(...page.events.map((e) => e.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(all.events.map((e) => e.id));
    expect(new Set(seen).size).toBe(seen.length);
    const times = all.events.map(
      (e) => Number(e.createTime?.seconds) * 1e3 + (e.createTime?.nanos ?? 0) / 1e6,
    );
    expect(times).toEqual([...times].sort((x, y) => y - x));

    const updates = await admin.listAuditEvents(
      { workspaceId: workspace.id, types: ["member_updated"], pageSize: 2 },
      asAdmin(),
    );
    expect(updates.events.every((e) => e.type === "member_updated")).toBe(true);
    expect(updates.nextPageToken).not.toBe("");

    const one = await admin.listAuditEvents(
      { workspaceId: workspace.id, userId: members[0]?.id as string },
      asAdmin(),
    );
    expect(one.events.length).toBeGreaterThanOrEqual(2);
    expect(one.events.every((e) => e.userId === members[0]?.id)).toBe(true);

    const future = await admin.listAuditEvents(
      { workspaceId: workspace.id, startTime: timestampFromMs(Date.now() + 3_600_000) },
      asAdmin(),
    );
    expect(future.events).toEqual([]);

    // A deployment-wide key sees events of every workspace without naming one.
    const everywhere = await admin.listAuditEvents({ types: ["workspace_created"] }, asAdmin());
    expect(everywhere.events.some((e) => e.workspaceId === workspace.id)).toBe(true);
    // The owner sees their workspace's log; only its.
    const mine = await admin.listAuditEvents(
      { workspaceId: workspace.id },
      bearer(owner.tokens.accessToken),
    );
    expect(mine.events.every((e) => e.workspaceId === workspace.id)).toBe(true);
  });
});
