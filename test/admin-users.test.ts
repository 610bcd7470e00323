import type { JsonObject } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService, UserStatusFilter } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { Role } from "../gen/keygate/v1/types_pb.js";
import { generateAdminKey } from "../src/crypto/admin-key.js";
import { sql } from "../src/db/sql.js";
import { insertAdminKey } from "../src/repositories/admin-keys.js";
import { failure } from "./support/failure.js";
import { uniqueEmail } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

let keygate: TestKeygate;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let defaultWorkspaceId: string;
let adminKey: string;
let adminKeyId: string;

let counter = 0;
const password = "correct horse battery staple";

const bearer = (token: string, workspaceId?: string) => ({
  headers: {
    authorization: `Bearer ${token}`,
    ...(workspaceId ? { "x-workspace-id": workspaceId } : {}),
  },
});
const asAdmin = () => bearer(adminKey);

beforeAll(async () => {
  keygate = await startTestKeygate();
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  adminKey = keygate.bootstrapped?.adminKey as string;
  adminKeyId = await keygate.database.pool.oneFirst(sql.type(z.object({ id: z.string() }))`
    SELECT id FROM admin_keys WHERE prefix = ${keygate.bootstrapped?.adminKeyPrefix as string}`);
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
});
afterAll(async () => {
  await keygate?.stop();
});

/**
 * Provisions a user with a password and a proven address (so that adding them elsewhere
 * leaves their password alone) into a workspace (the default one unless named).
 */
async function provision(tag: string, workspaceId = defaultWorkspaceId, role = Role.MEMBER) {
  const email = uniqueEmail(tag);
  const res = await admin.provisionUser(
    { email, password, workspaceId, role, emailVerified: true },
    asAdmin(),
  );
  return { email, userId: res.user?.id as string, res };
}

async function login(email: string, workspaceId = defaultWorkspaceId) {
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  return res.result.value;
}

/** A workspace created through ProvisionUser, with its owner. */
async function workspaceWithOwner(tag: string) {
  const email = uniqueEmail(`${tag}-owner`);
  const res = await admin.provisionUser(
    {
      email,
      password,
      role: Role.OWNER,
      createWorkspace: { name: `Workspace ${tag}`, slug: `${tag}-${Date.now()}-${++counter}` },
    },
    asAdmin(),
  );
  return {
    workspaceId: res.membership?.workspaceId as string,
    ownerEmail: email,
    ownerId: res.user?.id as string,
  };
}

/** An admin key row made directly in SQL; answers the key in clear. */
async function keyFor(workspaceId: string | null, role: "read_only" | "admin") {
  const key = generateAdminKey();
  await insertAdminKey(keygate.database.pool, {
    workspaceId,
    name: `test ${role}`,
    prefix: key.prefix,
    hash: key.hash,
    role,
    introspect: false,
    createdBy: "test",
  });
  return key.secret;
}

const countRow = z.object({ n: z.number() });

describe("ProvisionUser", () => {
  it("creates a user with a membership, verified email and metadata, and the user can log in", async () => {
    const email = uniqueEmail("prov");
    const res = await admin.provisionUser(
      {
        email,
        password,
        emailVerified: true,
        metadata: { plan: "pro", seats: 3 },
        workspaceId: defaultWorkspaceId,
        role: Role.ADMIN,
      },
      asAdmin(),
    );
    expect(res.created).toBe(true);
    expect(res.user?.email).toBe(email);
    expect(res.user?.emailVerified).toBe(true);
    expect(res.user?.metadata).toEqual({ plan: "pro", seats: 3 });
    expect(res.membership?.role).toBe(Role.ADMIN);
    expect(res.membership?.workspaceId).toBe(defaultWorkspaceId);
    const tokens = await login(email);
    expect(tokens.role).toBe(Role.ADMIN);
  });

  it("is idempotent: a repeat answers the same with created=false; another role is ALREADY_EXISTS", async () => {
    const { email, userId, res } = await provision("idem");
    expect(res.created).toBe(true);
    const again = await admin.provisionUser(
      { email: email.toUpperCase(), password, workspaceId: defaultWorkspaceId },
      asAdmin(),
    );
    expect(again.created).toBe(false);
    expect(again.user?.id).toBe(userId);
    expect(again.membership?.role).toBe(Role.MEMBER);
    const conflict = await failure(
      admin.provisionUser(
        { email, password, workspaceId: defaultWorkspaceId, role: Role.ADMIN },
        asAdmin(),
      ),
    );
    expect(conflict.code).toBe(Code.AlreadyExists);
    expect(conflict.reason).toBe("ALREADY_EXISTS");
  });

  it("answers 5 concurrent identical calls with one user, created=true exactly once", async () => {
    const email = uniqueEmail("race");
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        admin.provisionUser(
          { email, password, workspaceId: defaultWorkspaceId, role: Role.MEMBER },
          asAdmin(),
        ),
      ),
    );
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.user?.id)).size).toBe(1);
    const n = await keygate.database.pool.oneFirst(sql.type(countRow)`
      SELECT count(*)::int AS n FROM users WHERE email_normalized = ${email.toLowerCase()}`);
    expect(n).toBe(1);
    const members = await keygate.database.pool.oneFirst(sql.type(countRow)`
      SELECT count(*)::int AS n FROM workspace_members WHERE user_id = ${results[0]?.user?.id as string}`);
    expect(members).toBe(1);
  });

  it("creates a workspace for a deployment admin, idempotently", async () => {
    const email = uniqueEmail("creator");
    const slug = `made-${Date.now()}`;
    const request = {
      email,
      password,
      role: Role.OWNER,
      createWorkspace: { name: "Made", slug },
    };
    const first = await admin.provisionUser(request, asAdmin());
    expect(first.created).toBe(true);
    expect(first.membership?.role).toBe(Role.OWNER);
    const second = await admin.provisionUser(request, asAdmin());
    expect(second.created).toBe(false);
    expect(second.membership?.workspaceId).toBe(first.membership?.workspaceId);
    // Someone else with that slug is not a repeat.
    const taken = await failure(
      admin.provisionUser({ ...request, email: uniqueEmail("other") }, asAdmin()),
    );
    expect(taken.code).toBe(Code.AlreadyExists);
  });

  it("refuses malformed input with the field, and passwords below the policy", async () => {
    const bad = await failure(
      admin.provisionUser({ email: "not an email", workspaceId: "nope" }, asAdmin()),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.fields).toEqual(expect.arrayContaining(["email", "workspace_id"]));
    const short = await failure(
      admin.provisionUser(
        { email: uniqueEmail("short"), password: "short", workspaceId: defaultWorkspaceId },
        asAdmin(),
      ),
    );
    expect(short.code).toBe(Code.InvalidArgument);
    expect(short.reason).toBe("PASSWORD_TOO_SHORT");
    const missing = await failure(
      admin.provisionUser(
        { email: uniqueEmail("nows"), workspaceId: "00000000-0000-4000-8000-000000000000" },
        asAdmin(),
      ),
    );
    expect(missing.code).toBe(Code.NotFound);
    const badRole = await failure(
      admin.provisionUser(
        { email: uniqueEmail("role"), workspaceId: defaultWorkspaceId, role: 42 as Role },
        asAdmin(),
      ),
    );
    expect(badRole.code).toBe(Code.InvalidArgument);
    expect(badRole.fields).toEqual(["role"]);
  });
});

describe("GetUser, ListUsers", () => {
  it("GetUser answers the user with the lockout state; UnblockUser clears a lockout", async () => {
    const { email, userId } = await provision("locked");
    await keygate.database.pool.query(sql.unsafe`
      INSERT INTO login_failures (email_normalized, failed_count, lockouts, locked_until, updated_at)
      VALUES (${email.toLowerCase()}, 3, 1, now() + interval '10 minutes', now())`);
    const locked = await failure(auth.login({ email, password, workspaceId: defaultWorkspaceId }));
    expect(locked.reason).toBe("ACCOUNT_LOCKED");
    const got = await admin.getUser({ userId }, asAdmin());
    expect(got.user?.email).toBe(email);
    expect(got.user?.failedLoginCount).toBe(3);
    expect(Number(got.user?.lockedUntil?.seconds)).toBeGreaterThan(Date.now() / 1000);

    const unblocked = await admin.unblockUser({ userId }, asAdmin());
    expect(unblocked.user?.lockedUntil).toBeUndefined();
    expect(unblocked.user?.failedLoginCount).toBe(0);
    await login(email);
  });

  it("GetUser is NOT_FOUND for unknown ids and INVALID_ARGUMENT for malformed ones", async () => {
    const unknown = await failure(
      admin.getUser({ userId: "00000000-0000-4000-8000-000000000000" }, asAdmin()),
    );
    expect(unknown.code).toBe(Code.NotFound);
    const malformed = await failure(admin.getUser({ userId: "x'; drop table users" }, asAdmin()));
    expect(malformed.code).toBe(Code.InvalidArgument);
    expect(malformed.fields).toEqual(["user_id"]);
  });

  it("pages through every matching user exactly once, in a stable order, with filters", async () => {
    const prefix = `page-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const res = await admin.provisionUser(
        { email: `${prefix}-${i}@example.test`, workspaceId: defaultWorkspaceId },
        asAdmin(),
      );
      ids.push(res.user?.id as string);
    }
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await admin.listUsers(
        { emailPrefix: prefix.toUpperCase(), pageSize: 3, pageToken },
        asAdmin(),
      );
      seen.push(...page.users.map((u) => u.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "");
    expect(pages).toBe(3);
    expect(seen).toEqual(ids);

    await admin.blockUser({ userId: ids[2] as string, reason: "test" }, asAdmin());
    const blocked = await admin.listUsers(
      { emailPrefix: prefix, status: UserStatusFilter.BLOCKED },
      asAdmin(),
    );
    expect(blocked.users.map((u) => u.id)).toEqual([ids[2]]);
    const active = await admin.listUsers(
      { emailPrefix: prefix, status: UserStatusFilter.ACTIVE, workspaceId: defaultWorkspaceId },
      asAdmin(),
    );
    expect(active.users).toHaveLength(6);

    const first = await admin.listUsers({ emailPrefix: prefix, pageSize: 2 }, asAdmin());
    const otherQuery = await failure(
      admin.listUsers({ emailPrefix: `${prefix}-1`, pageToken: first.nextPageToken }, asAdmin()),
    );
    expect(otherQuery.code).toBe(Code.InvalidArgument);
    expect(otherQuery.reason).toBe("INVALID_PAGE_TOKEN");
    const garbage = await failure(admin.listUsers({ pageToken: "%%not-a-token" }, asAdmin()));
    expect(garbage.reason).toBe("INVALID_PAGE_TOKEN");
  });
});

describe("BlockUser, sessions", () => {
  it("SECURITY.md 11: BlockUser ends every session at once and login answers INVALID_CREDENTIALS", async () => {
    const { email, userId } = await provision("blocked");
    const tokens = await login(email);
    const res = await admin.blockUser({ userId, reason: "fraud review" }, asAdmin());
    expect(res.user?.blocked).toBe(true);

    const refresh = await failure(auth.refresh({ refreshToken: tokens.refreshToken }));
    expect(refresh.code).toBe(Code.Unauthenticated);
    const session = await failure(auth.getSession({}, bearer(tokens.accessToken)));
    expect(session.code).toBe(Code.Unauthenticated);
    const again = await failure(auth.login({ email, password, workspaceId: defaultWorkspaceId }));
    expect(again.code).toBe(Code.Unauthenticated);
    expect(again.reason).toBe("INVALID_CREDENTIALS");
    const live = await keygate.database.pool.oneFirst(sql.type(countRow)`
      SELECT count(*)::int AS n FROM sessions WHERE user_id = ${userId} AND revoked_at IS NULL`);
    expect(live).toBe(0);

    const event = await keygate.database.pool.one(
      sql.type(
        z.object({ actor: z.string().nullable(), details: z.record(z.string(), z.unknown()) }),
      )`SELECT actor, details FROM audit_events WHERE type = 'user_blocked' AND user_id = ${userId}`,
    );
    expect(event.actor).toBe(`admin_key:${adminKeyId}`);
    expect(event.details.reason).toBe("fraud review");

    await admin.unblockUser({ userId }, asAdmin());
    await login(email);
  });

  it("RevokeUserSessions ends one workspace's sessions or every one, answering the count", async () => {
    const { workspaceId } = await workspaceWithOwner("revoke");
    const { email, userId } = await provision("sessions");
    await admin.provisionUser({ email, workspaceId }, asAdmin());
    const here = await login(email);
    await login(email);
    const there = await login(email, workspaceId);

    const one = await admin.revokeUserSessions({ userId, workspaceId }, asAdmin());
    expect(one.revokedCount).toBe(1);
    expect((await failure(auth.refresh({ refreshToken: there.refreshToken }))).code).toBe(
      Code.Unauthenticated,
    );
    await auth.getSession({}, bearer(here.accessToken));

    const all = await admin.revokeUserSessions({ userId }, asAdmin());
    expect(all.revokedCount).toBe(2);
    expect((await failure(auth.getSession({}, bearer(here.accessToken)))).code).toBe(
      Code.Unauthenticated,
    );
    const event = await keygate.database.pool.oneFirst(sql.type(
      z.object({ actor: z.string().nullable() }),
    )`SELECT actor FROM audit_events WHERE type = 'user_sessions_revoked' AND user_id = ${userId}
      AND workspace_id = ${workspaceId}`);
    expect(event).toBe(`admin_key:${adminKeyId}`);
  });
});

describe("MarkEmailVerified, UpdateUserMetadata, DeleteUser", () => {
  it("MarkEmailVerified sets the flag", async () => {
    const { userId } = await provision("verify");
    const res = await admin.markEmailVerified({ userId }, asAdmin());
    expect(res.user?.emailVerified).toBe(true);
  });

  it("UpdateUserMetadata replaces or merges, and refuses more than 16 KiB", async () => {
    const { userId } = await provision("meta");
    const replaced = await admin.updateUserMetadata(
      { userId, metadata: { a: 1, b: { c: "d" } } },
      asAdmin(),
    );
    expect(replaced.user?.metadata).toEqual({ a: 1, b: { c: "d" } });
    const merged = await admin.updateUserMetadata(
      { userId, metadata: { b: null, e: true }, merge: true },
      asAdmin(),
    );
    expect(merged.user?.metadata).toEqual({ a: 1, b: null, e: true });
    const big = await failure(
      admin.updateUserMetadata({ userId, metadata: { blob: "x".repeat(17_000) } }, asAdmin()),
    );
    expect(big.code).toBe(Code.InvalidArgument);
    expect(big.fields).toEqual(["metadata"]);
    // Nested deeper than 16 levels it would break gRPC answers that carry it (the binary
    // decoders' depth limit): refused; 16 levels are kept and read back over gRPC-shaped binary.
    const nest = (levels: number): JsonObject =>
      levels === 1 ? { leaf: true } : { n: nest(levels - 1) };
    const deep = await failure(admin.updateUserMetadata({ userId, metadata: nest(17) }, asAdmin()));
    expect([deep.code, deep.fields]).toEqual([Code.InvalidArgument, ["metadata"]]);
    await admin.updateUserMetadata({ userId, metadata: nest(16) }, asAdmin());
    const binary = createClient(
      AdminService,
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "2", useBinaryFormat: true }),
    );
    expect((await binary.getUser({ userId }, asAdmin())).user?.metadata).toEqual(nest(16));
    // Each half fits; merged they would not.
    await admin.updateUserMetadata({ userId, metadata: { one: "y".repeat(9000) } }, asAdmin());
    const mergedTooBig = await failure(
      admin.updateUserMetadata(
        { userId, metadata: { two: "z".repeat(9000) }, merge: true },
        asAdmin(),
      ),
    );
    expect(mergedTooBig.code).toBe(Code.InvalidArgument);
    const missing = await failure(admin.updateUserMetadata({ userId }, asAdmin()));
    expect(missing.fields).toEqual(["metadata"]);
  });

  it("DeleteUser erases the user and keeps audit events with the id as a tombstone", async () => {
    const { email, userId } = await provision("delete");
    await login(email);
    await admin.deleteUser({ userId }, asAdmin());
    expect((await failure(admin.getUser({ userId }, asAdmin()))).code).toBe(Code.NotFound);
    const rows = await keygate.database.pool.oneFirst(sql.type(countRow)`
      SELECT ((SELECT count(*) FROM users WHERE id = ${userId})
           + (SELECT count(*) FROM workspace_members WHERE user_id = ${userId})
           + (SELECT count(*) FROM sessions WHERE user_id = ${userId}))::int AS n`);
    expect(rows).toBe(0);
    const events = await keygate.database.pool.any(
      sql.type(
        z.object({ type: z.string(), actor: z.string().nullable() }),
      )`SELECT type, actor FROM audit_events WHERE user_id = ${userId} ORDER BY created_at`,
    );
    expect(events.map((e) => e.type)).toEqual(
      expect.arrayContaining(["user_provisioned", "login_succeeded", "user_deleted"]),
    );
    expect(events.find((e) => e.type === "user_deleted")?.actor).toBe(`admin_key:${adminKeyId}`);
    expect((await failure(admin.deleteUser({ userId }, asAdmin()))).code).toBe(Code.NotFound);
  });

  it("DeleteUser refuses the last owner of a workspace with other members (LAST_OWNER)", async () => {
    const { workspaceId, ownerId } = await workspaceWithOwner("lastowner");
    const lone = await workspaceWithOwner("alone");
    // The only member of a workspace may go.
    await admin.deleteUser({ userId: lone.ownerId }, asAdmin());
    await provision("member-of-owned", workspaceId);
    const refused = await failure(admin.deleteUser({ userId: ownerId }, asAdmin()));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(refused.reason).toBe("LAST_OWNER");
    await provision("second-owner", workspaceId, Role.OWNER);
    await admin.deleteUser({ userId: ownerId }, asAdmin());
  });
});

describe("who may call", () => {
  it("no credentials is UNAUTHENTICATED", async () => {
    const res = await failure(admin.listUsers({}));
    expect(res.code).toBe(Code.Unauthenticated);
    const bad = await failure(admin.listUsers({}, bearer("kg_AAAAAAAA_not-a-key")));
    expect(bad.code).toBe(Code.Unauthenticated);
  });

  it("a read_only deployment key reads but cannot block, unblock, verify or delete", async () => {
    const readOnly = await keyFor(null, "read_only");
    const { userId } = await provision("readonly");
    expect((await admin.getUser({ userId }, bearer(readOnly))).user?.id).toBe(userId);
    for (const call of [
      () => admin.blockUser({ userId }, bearer(readOnly)),
      () => admin.unblockUser({ userId }, bearer(readOnly)),
      () => admin.markEmailVerified({ userId }, bearer(readOnly)),
      () => admin.deleteUser({ userId }, bearer(readOnly)),
      () =>
        admin.provisionUser(
          { email: uniqueEmail("ro"), workspaceId: defaultWorkspaceId },
          bearer(readOnly),
        ),
    ]) {
      const res = await failure(call());
      expect(res.code).toBe(Code.PermissionDenied);
    }
    expect((await admin.getUser({ userId }, asAdmin())).user?.blocked).toBe(false);
  });

  it("SECURITY.md 21: a workspace-scoped key neither sees nor changes users of another workspace", async () => {
    const b = await workspaceWithOwner("tenant-b");
    const keyB = await keyFor(b.workspaceId, "admin");
    const unproven = async (tag: string, workspaceId = defaultWorkspaceId) => {
      const res = await admin.provisionUser(
        { email: uniqueEmail(tag), password, workspaceId, role: Role.MEMBER },
        asAdmin(),
      );
      return { userId: res.user?.id as string };
    };
    const outsider = await unproven("outsider");
    const insider = await unproven("insider", b.workspaceId);
    const asB = bearer(keyB);
    const userId = outsider.userId;

    for (const call of [
      () => admin.getUser({ userId }, asB),
      () => admin.markEmailVerified({ userId }, asB),
      () => admin.updateUserMetadata({ userId, metadata: { x: 1 } }, asB),
      () => admin.revokeUserSessions({ userId, workspaceId: b.workspaceId }, asB),
    ]) {
      const res = await failure(call());
      expect(res.code).toBe(Code.NotFound);
    }
    for (const call of [
      () => admin.listUsers({ workspaceId: defaultWorkspaceId }, asB),
      () => admin.revokeUserSessions({ userId }, asB),
      () => admin.revokeUserSessions({ userId, workspaceId: defaultWorkspaceId }, asB),
      () => admin.blockUser({ userId }, asB),
      () => admin.deleteUser({ userId }, asB),
      () => admin.provisionUser({ email: uniqueEmail("x"), workspaceId: defaultWorkspaceId }, asB),
      () =>
        admin.provisionUser(
          { email: uniqueEmail("y"), createWorkspace: { name: "Y", slug: `y-${Date.now()}` } },
          asB,
        ),
    ]) {
      const res = await failure(call());
      expect(res.code).toBe(Code.PermissionDenied);
    }
    const noWorkspace = await failure(admin.listUsers({}, asB));
    expect(noWorkspace.code).toBe(Code.InvalidArgument);
    expect(noWorkspace.fields).toEqual(["workspace_id"]);
    const outsiderNow = await admin.getUser({ userId }, asAdmin());
    expect(outsiderNow.user?.emailVerified).toBe(false);
    expect(outsiderNow.user?.metadata).toEqual({});

    // Its own users it may read and change.
    const mine = await admin.listUsers({ workspaceId: b.workspaceId }, asB);
    expect(mine.users.map((u) => u.id).sort()).toEqual([b.ownerId, insider.userId].sort());
    expect((await admin.getUser({ userId: insider.userId }, asB)).user?.id).toBe(insider.userId);
    // B vouches for its member's address in B only (SECURITY.md 29): the account is unproven.
    const verified = await admin.markEmailVerified({ userId: insider.userId }, asB);
    expect(verified.user?.emailVerified).toBe(false);
    const added = await admin.provisionUser(
      { email: uniqueEmail("b-new"), workspaceId: b.workspaceId },
      asB,
    );
    expect(added.created).toBe(true);
    const actor = await keygate.database.pool.oneFirst(
      sql.type(
        z.object({ actor: z.string().nullable() }),
      )`SELECT actor FROM audit_events WHERE type = 'user_provisioned' AND user_id = ${added.user?.id as string}`,
    );
    expect(actor).toMatch(/^admin_key:[0-9a-f-]{36}$/);
    expect(actor).not.toBe(`admin_key:${adminKeyId}`);
  });

  it("SECURITY.md 21: a signed-in member is PERMISSION_DENIED; an owner reads their workspace's users only", async () => {
    const b = await workspaceWithOwner("tenant-c");
    const member = await provision("plain-member", b.workspaceId);
    const outsider = await provision("c-outsider");
    const memberTokens = await login(member.email, b.workspaceId);
    const asMember = bearer(memberTokens.accessToken, b.workspaceId);
    for (const call of [
      () => admin.getUser({ userId: member.userId }, asMember),
      () => admin.listUsers({ workspaceId: b.workspaceId }, asMember),
      () => admin.markEmailVerified({ userId: member.userId }, asMember),
    ]) {
      const res = await failure(call());
      expect(res.code).toBe(Code.PermissionDenied);
    }

    // Deleting oneself takes an action proof.
    const self = await failure(admin.deleteUser({ userId: member.userId }, asMember));
    expect(self.code).toBe(Code.PermissionDenied);
    expect(self.reason).toBe("ACTION_PROOF_REQUIRED");

    const ownerTokens = await login(b.ownerEmail, b.workspaceId);
    const asOwner = bearer(ownerTokens.accessToken, b.workspaceId);
    const list = await admin.listUsers({ workspaceId: b.workspaceId }, asOwner);
    expect(list.users.map((u) => u.id).sort()).toEqual([b.ownerId, member.userId].sort());
    expect((await admin.getUser({ userId: member.userId }, asOwner)).user?.id).toBe(member.userId);
    expect((await failure(admin.getUser({ userId: outsider.userId }, asOwner))).code).toBe(
      Code.NotFound,
    );
    expect(
      (await failure(admin.listUsers({ workspaceId: defaultWorkspaceId }, asOwner))).code,
    ).toBe(Code.PermissionDenied);
    expect((await failure(admin.blockUser({ userId: member.userId }, asOwner))).code).toBe(
      Code.PermissionDenied,
    );
  });
});
