import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { AdminKeyRole, Role } from "../gen/keygate/v1/types_pb.js";
import { withTenant } from "../src/db/with-tenant.js";
import { insertSession } from "../src/repositories/sessions.js";
import { failure } from "./support/failure.js";
import { bearer, type Provisioner, password, signedIn } from "./support/fixtures.js";
import { type RouterKeygate, startRouterKeygate } from "./support/router.js";

/**
 * ListGrants and RevokeGrant(s) through the real routes and interceptors. A grant is a session
 * row with its client (what /oauth2/token writes when it exchanges a code); the rows are
 * written here with the same repository function, since the router tier has no HTTP for the
 * code flow. test/openid-provider-grants.test.ts gets real grants through openid-client and
 * checks what revoking does to the client's tokens.
 */

let keygate: RouterKeygate;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let by: Provisioner;
let rootKey: string;
let workspaceA: string;
let workspaceB: string;
let keyA: string;
let readOnlyKeyA: string;

beforeAll(async () => {
  keygate = await startRouterKeygate();
  auth = createClient(AuthService, keygate.transport);
  admin = createClient(AdminService, keygate.transport);
  rootKey = keygate.bootstrapped.adminKey;
  workspaceA = keygate.bootstrapped.workspaceId;
  by = { admin, auth, adminKey: rootKey, workspaceId: workspaceA };
  const other = await admin.createWorkspace(
    { name: "Other", slug: `other-${Date.now()}` },
    bearer(rootKey),
  );
  workspaceB = other.workspace?.id as string;
  keyA = (
    await admin.createAdminKey(
      { name: "a-admin", workspaceId: workspaceA, role: AdminKeyRole.ADMIN },
      bearer(rootKey),
    )
  ).secret;
  readOnlyKeyA = (
    await admin.createAdminKey(
      { name: "a-read", workspaceId: workspaceA, role: AdminKeyRole.READ_ONLY },
      bearer(rootKey),
    )
  ).secret;
});
afterAll(async () => {
  await keygate?.stop();
});

async function registered(workspaceId: string, name = "Example app") {
  const res = await admin.createOAuthClient(
    { workspaceId, name, redirectUris: ["https://app.example.test/callback"] },
    bearer(rootKey),
  );
  return res.client?.clientId as string;
}

/** A grant session of the signed-in user for the client, made from their session. */
async function granted(
  who: { userId: string; workspaceId: string; sessionId: string },
  clientId: string,
  scopes: readonly string[] = ["openid", "email"],
) {
  const now = new Date();
  const session = await withTenant(keygate.database.pool, who.workspaceId, (tx) =>
    insertSession(tx, {
      workspaceId: who.workspaceId,
      userId: who.userId,
      ipAddress: null,
      userAgent: null,
      now,
      idleExpiresAt: new Date(now.getTime() + 3_600_000),
      expiresAt: new Date(now.getTime() + 86_400_000),
      accessExpiresAt: new Date(now.getTime() + 900_000),
      amr: ["pwd"],
      grant: { clientId, parentSessionId: who.sessionId, scopes, authTime: now, resources: [] },
    }),
  );
  return session.id;
}

describe("AuthService.ListGrants and RevokeGrant", () => {
  it("lists the caller's grants one per client, and ListSessions names each grant's client", async () => {
    const ada = await signedIn(by, "grants-ada");
    const mail = await registered(workspaceA, "Mail");
    const chat = await registered(workspaceA, "Chat");
    const first = await granted(ada, mail, ["openid"]);
    await granted(ada, mail, ["openid", "email"]);
    await granted(ada, chat);

    const { grants, nextPageToken } = await auth.listGrants({}, bearer(ada.accessToken));
    expect(nextPageToken).toBe("");
    expect(grants.map((g) => g.clientId)).toEqual([mail, chat].sort());
    const byClient = new Map(grants.map((g) => [g.clientId, g]));
    expect(byClient.get(mail)).toMatchObject({
      clientName: "Mail",
      workspaceId: workspaceA,
      userId: ada.userId,
      scopes: ["email", "openid"],
      sessionCount: 2,
    });
    expect(byClient.get(chat)).toMatchObject({ clientName: "Chat", sessionCount: 1 });

    const { sessions } = await auth.listSessions({}, bearer(ada.accessToken));
    expect(sessions.find((s) => s.id === ada.sessionId)?.clientId).toBe("");
    expect(sessions.find((s) => s.id === first)?.clientId).toBe(mail);
    expect(sessions.filter((s) => s.clientId !== "")).toHaveLength(3);
  });

  it("pages in a stable order and refuses another list's page token", async () => {
    const bob = await signedIn(by, "grants-pages");
    const clients = [await registered(workspaceA), await registered(workspaceA)];
    for (const c of clients) await granted(bob, c);
    const one = await auth.listGrants({ pageSize: 1 }, bearer(bob.accessToken));
    expect(one.grants).toHaveLength(1);
    const two = await auth.listGrants(
      { pageSize: 1, pageToken: one.nextPageToken },
      bearer(bob.accessToken),
    );
    expect([...one.grants, ...two.grants].map((g) => g.clientId)).toEqual(clients.sort());
    expect(two.nextPageToken).toBe("");
    // Another user's list is another list: their token does not page this one.
    const eve = await signedIn(by, "grants-pages-eve");
    expect(
      await failure(
        auth.listGrants({ pageSize: 1, pageToken: one.nextPageToken }, bearer(eve.accessToken)),
      ),
    ).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN" });
  });

  it("RevokeGrant ends every session of the grant, and nothing else, and is audited", async () => {
    const cy = await signedIn(by, "grants-revoke");
    const mail = await registered(workspaceA);
    const chat = await registered(workspaceA);
    await granted(cy, mail);
    await granted(cy, mail);
    await granted(cy, chat);
    const { revokedCount } = await auth.revokeGrant({ clientId: mail }, bearer(cy.accessToken));
    expect(revokedCount).toBe(2);
    const left = await auth.listGrants({}, bearer(cy.accessToken));
    expect(left.grants.map((g) => g.clientId)).toEqual([chat]);
    // The caller's own session is not a grant and goes on.
    const { sessions } = await auth.listSessions({}, bearer(cy.accessToken));
    expect(sessions.map((s) => s.clientId).sort()).toEqual(["", chat]);
    expect(
      await failure(auth.revokeGrant({ clientId: mail }, bearer(cy.accessToken))),
    ).toMatchObject({ code: Code.NotFound });
    expect(await failure(auth.revokeGrant({ clientId: "" }, bearer(cy.accessToken)))).toMatchObject(
      {
        code: Code.InvalidArgument,
        fields: ["client_id"],
      },
    );
    const { events } = await admin.listAuditEvents(
      { workspaceId: workspaceA, types: ["grant_revoked"], userId: cy.userId },
      bearer(rootKey),
    );
    expect(events).toHaveLength(1);
    expect(events[0]?.actor).toBe(`user:${cy.userId}`);
    expect(events[0]?.details).toEqual({
      client_id: mail,
      sessions_revoked: 2,
      consent_forgotten: false,
    });
  });

  it("SECURITY.md 21: a user neither sees nor ends another user's grants", async () => {
    const owner = await signedIn(by, "grants-victim");
    const other = await signedIn(by, "grants-attacker");
    const client = await registered(workspaceA);
    await granted(owner, client);
    expect((await auth.listGrants({}, bearer(other.accessToken))).grants).toEqual([]);
    expect(
      await failure(auth.revokeGrant({ clientId: client }, bearer(other.accessToken))),
    ).toMatchObject({ code: Code.NotFound });
    expect((await auth.listGrants({}, bearer(owner.accessToken))).grants).toHaveLength(1);
  });

  it("SECURITY.md 21: an account in two workspaces sees and ends only the grants of its session's workspace", async () => {
    const inA = await signedIn(by, "grants-shared", { emailVerified: true });
    await admin.addMember({ workspaceId: workspaceB, userId: inA.userId }, bearer(rootKey));
    const login = await auth.login({
      email: inA.email,
      password,
      workspaceId: workspaceB,
    });
    if (login.result.case !== "tokens") throw new Error("no tokens in B");
    const inB = login.result.value;
    const clientA = await registered(workspaceA);
    const clientB = await registered(workspaceB);
    await granted(inA, clientA);
    await granted({ ...inB, workspaceId: workspaceB }, clientB);
    expect(
      (await auth.listGrants({}, bearer(inA.accessToken))).grants.map((g) => g.clientId),
    ).toEqual([clientA]);
    // The x-workspace-id header cannot move the call to the other workspace.
    expect(
      await failure(
        auth.listGrants(
          {},
          { headers: { ...bearer(inA.accessToken).headers, "x-workspace-id": workspaceB } },
        ),
      ),
    ).toMatchObject({ code: Code.PermissionDenied });
    expect(
      await failure(auth.revokeGrant({ clientId: clientB }, bearer(inA.accessToken))),
    ).toMatchObject({ code: Code.NotFound });
    expect((await auth.listGrants({}, bearer(inB.accessToken))).grants).toHaveLength(1);
  });
});

describe("AdminService.ListGrants and RevokeGrants", () => {
  it("lists a workspace's grants, filtered by user and client, for its readers", async () => {
    const dee = await signedIn(by, "grants-admin-list");
    const eli = await signedIn(by, "grants-admin-list");
    const client = await registered(workspaceA);
    const otherClient = await registered(workspaceA);
    await granted(dee, client);
    await granted(eli, client);
    await granted(eli, otherClient);
    const ofClient = await admin.listGrants(
      { workspaceId: workspaceA, clientId: client },
      bearer(readOnlyKeyA),
    );
    expect(ofClient.grants.map((g) => g.userId).sort()).toEqual([dee.userId, eli.userId].sort());
    const ofEli = await admin.listGrants(
      { workspaceId: workspaceA, userId: eli.userId },
      bearer(keyA),
    );
    expect(ofEli.grants.map((g) => g.clientId).sort()).toEqual([client, otherClient].sort());
    const both = await admin.listGrants(
      { workspaceId: workspaceA, userId: eli.userId, clientId: otherClient },
      bearer(keyA),
    );
    expect(both.grants).toHaveLength(1);
    // Pages walk (user, client) in order, the filters being part of the list.
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await admin.listGrants(
        { workspaceId: workspaceA, clientId: client, pageSize: 1, pageToken },
        bearer(keyA),
      );
      seen.push(...page.grants.map((g) => g.userId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual([dee.userId, eli.userId].sort());
    const token = (
      await admin.listGrants(
        { workspaceId: workspaceA, clientId: client, pageSize: 1 },
        bearer(keyA),
      )
    ).nextPageToken;
    expect(
      await failure(admin.listGrants({ workspaceId: workspaceA, pageToken: token }, bearer(keyA))),
    ).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN" });
    expect(
      await failure(admin.listGrants({ workspaceId: "", userId: "x" }, bearer(keyA))),
    ).toMatchObject({ code: Code.InvalidArgument, fields: ["workspace_id", "user_id"] });
    // A member's own token is no admin's.
    expect(
      await failure(admin.listGrants({ workspaceId: workspaceA }, bearer(dee.accessToken))),
    ).toMatchObject({ code: Code.PermissionDenied });
  });

  it("RevokeGrants ends a member's grant for workspace admins only, and is audited", async () => {
    const fay = await signedIn(by, "grants-admin-revoke");
    const client = await registered(workspaceA);
    await granted(fay, client);
    await granted(fay, client);
    const request = { workspaceId: workspaceA, userId: fay.userId, clientId: client };
    expect(await failure(admin.revokeGrants(request, bearer(readOnlyKeyA)))).toMatchObject({
      code: Code.PermissionDenied,
    });
    const workspaceAdmin = await signedIn(by, "grants-ws-admin", { role: Role.ADMIN });
    expect(
      (await admin.revokeGrants(request, bearer(workspaceAdmin.accessToken))).revokedCount,
    ).toBe(2);
    expect((await auth.listGrants({}, bearer(fay.accessToken))).grants).toEqual([]);
    expect(await failure(admin.revokeGrants(request, bearer(keyA)))).toMatchObject({
      code: Code.NotFound,
    });
    const { events } = await admin.listAuditEvents(
      { workspaceId: workspaceA, types: ["grant_revoked"], userId: fay.userId },
      bearer(rootKey),
    );
    expect(events.map((e) => e.actor)).toEqual([`user:${workspaceAdmin.userId}`]);
    expect(
      await failure(admin.revokeGrants({ ...request, clientId: "" }, bearer(keyA))),
    ).toMatchObject({ code: Code.InvalidArgument, fields: ["client_id"] });
  });

  it("an owner's grants are ended by owners only, as their sessions are", async () => {
    const owner = await signedIn(by, "grants-owner", { role: Role.OWNER });
    const client = await registered(workspaceA);
    await granted(owner, client);
    const workspaceAdmin = await signedIn(by, "grants-admin-vs-owner", { role: Role.ADMIN });
    const request = { workspaceId: workspaceA, userId: owner.userId, clientId: client };
    expect(
      await failure(admin.revokeGrants(request, bearer(workspaceAdmin.accessToken))),
    ).toMatchObject({ code: Code.PermissionDenied });
    const otherOwner = await signedIn(by, "grants-owner-2", { role: Role.OWNER });
    expect((await admin.revokeGrants(request, bearer(otherOwner.accessToken))).revokedCount).toBe(
      1,
    );
  });

  it("SECURITY.md 21: workspace A's admins neither see nor end workspace B's grants, of a shared account neither", async () => {
    const shared = await signedIn(by, "grants-admin-shared", { emailVerified: true });
    await admin.addMember({ workspaceId: workspaceB, userId: shared.userId }, bearer(rootKey));
    const onlyB = await signedIn(by, "grants-only-b", { workspaceId: workspaceB });
    const login = await auth.login({
      email: shared.email,
      password,
      workspaceId: workspaceB,
    });
    if (login.result.case !== "tokens") throw new Error("no tokens in B");
    const sharedInB = { ...login.result.value, workspaceId: workspaceB };
    const clientA = await registered(workspaceA);
    const clientB = await registered(workspaceB);
    await granted(shared, clientA);
    await granted(sharedInB, clientB);
    await granted({ ...onlyB, workspaceId: workspaceB }, clientB);
    const adminOfA = await signedIn(by, "grants-admin-of-a", { role: Role.ADMIN });

    for (const credential of [keyA, readOnlyKeyA, adminOfA.accessToken]) {
      expect(
        await failure(admin.listGrants({ workspaceId: workspaceB }, bearer(credential))),
      ).toMatchObject({ code: Code.PermissionDenied });
      // Naming B's client or B's own member in A's workspace shows nothing of B.
      const inA = await admin.listGrants(
        { workspaceId: workspaceA, userId: shared.userId },
        bearer(credential),
      );
      expect(inA.grants.map((g) => g.clientId)).toEqual([clientA]);
      const bClient = await admin.listGrants(
        { workspaceId: workspaceA, clientId: clientB },
        bearer(credential),
      );
      expect(bClient.grants).toEqual([]);
    }
    for (const credential of [keyA, adminOfA.accessToken]) {
      expect(
        await failure(
          admin.revokeGrants(
            { workspaceId: workspaceB, userId: shared.userId, clientId: clientB },
            bearer(credential),
          ),
        ),
      ).toMatchObject({ code: Code.PermissionDenied });
      expect(
        await failure(
          admin.revokeGrants(
            { workspaceId: workspaceA, userId: shared.userId, clientId: clientB },
            bearer(credential),
          ),
        ),
      ).toMatchObject({ code: Code.NotFound });
      // B's member is nobody in A: NOT_FOUND, the same as for an id nobody has.
      expect(
        await failure(
          admin.revokeGrants(
            { workspaceId: workspaceA, userId: onlyB.userId, clientId: clientB },
            bearer(credential),
          ),
        ),
      ).toMatchObject({ code: Code.NotFound });
    }
    const inB = await admin.listGrants(
      { workspaceId: workspaceB, clientId: clientB },
      bearer(rootKey),
    );
    expect(inB.grants.map((g) => g.userId).sort()).toEqual([shared.userId, onlyB.userId].sort());
    // A's audit log names nothing of B's.
    const { events } = await admin.listAuditEvents(
      { workspaceId: workspaceA, types: ["grant_revoked"], userId: onlyB.userId },
      bearer(rootKey),
    );
    expect(events).toEqual([]);
  });
});
