import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { Secret, TOTP } from "otpauth";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { FactorService } from "../../gen/keygate/v1/factor_service_pb.js";
import { OAuthService } from "../../gen/keygate/v1/oauth_service_pb.js";
import { TokenIntrospectionService } from "../../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole, FactorType, MembershipStatus, Role } from "../../gen/keygate/v1/types_pb.js";
import { freePort } from "../support/fixtures.js";
import { grantThroughRpcs, relyingParty } from "../support/provider.js";
import { startTestKeygate, type TestKeygate } from "../support/server.js";

// SECURITY.md 21, 29 and 45–48 as a property: whatever a caller of workspace A does, in any order,
// with workspace B's identifiers and credentials mixed into its requests, no answer and no
// error shows B's data, and nothing of B changes. That holds for an account both workspaces
// share too: whatever A does to its own membership of it (roles, status, metadata, vouching,
// keys, failed logins, password guesses through its session in A), B's view of that member
// and the member's way into B stay as they were. (The lockout is deployment-wide by design,
// SECURITY.md 33, and anyone can run into it, so the server here runs with it lifted.) B's
// OpenID Provider is in it too: its clients, the grant the shared account made there (for a
// resource) and a machine client's token for that resource stay B's, whatever A does with
// their ids and tokens.

let keygate: TestKeygate;
let rootKey: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let introspection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;
let factors: ReturnType<typeof createClient<typeof FactorService>>;

const password = "correct horse battery staple";
let counter = 0;
const as = (token: string, workspaceId?: string) => ({
  headers: {
    authorization: `Bearer ${token}`,
    ...(workspaceId ? { "x-workspace-id": workspaceId } : {}),
  },
});

interface Member {
  email: string;
  userId: string;
  sessionId: string;
  accessToken: string;
  refreshToken: string;
}
interface Side {
  id: string;
  name: string;
  slug: string;
  key: string;
  owner: Member;
  member: Member;
}
let a: Side;
let b: Side;
/** B's identifiers and names: none may appear in an answer to A unless A sent it. */
const bMarkers = new Set<string>();
/**
 * Accounts A invited by address: the invitation names the account's id and that address to
 * A (an id is all it learns, the same for a new address), so from then on both are A's to see.
 */
const invitedByA = new Set<string>();
/** An account that is a member of both workspaces, with a session in each. */
let shared: { email: string; userId: string; inA: Member; inB: Member };
/** B's provider: a relying party, the shared account's grant to it, a machine client. */
let bProvider: {
  clientId: string;
  grantToken: string;
  grantSessionId: string;
  machineId: string;
  machineSecret: string;
  machineToken: string;
};
/** A's own machine client, which A may use and change. */
let aMachine: { clientId: string; secret: string };
const resource = "https://api.example.test/v1";
const redirectUri = "http://127.0.0.1:9/callback";
/** What B wrote on the shared account: only B may ever see it. */
const bSecret = `b-private-${crypto.randomUUID()}`;

async function person(workspaceId: string, role: Role, tag: string): Promise<Member> {
  const email = `${tag}-${Date.now()}-${++counter}@example.test`;
  const provisioned = await admin.provisionUser(
    { email, password, workspaceId, role, emailVerified: true },
    as(rootKey),
  );
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  const t = res.result.value;
  return {
    email,
    userId: provisioned.user?.id as string,
    sessionId: t.sessionId,
    accessToken: t.accessToken,
    refreshToken: t.refreshToken,
  };
}

async function side(tag: string): Promise<Side> {
  const slug = `${tag}-${Date.now()}-${++counter}`;
  const name = `Workspace ${tag} ${counter}`;
  const ws = await admin.createWorkspace({ name, slug }, as(rootKey));
  const id = ws.workspace?.id as string;
  const key = await admin.createAdminKey(
    { name: `${tag}-key`, workspaceId: id, role: AdminKeyRole.ADMIN, introspect: true },
    as(rootKey),
  );
  return {
    id,
    name,
    slug,
    key: key.secret,
    owner: await person(id, Role.OWNER, `${tag}-owner`),
    member: await person(id, Role.MEMBER, `${tag}-member`),
  };
}

function remember(m: Member) {
  for (const v of [m.email, m.userId, m.sessionId]) bMarkers.add(v);
}

async function machineClient(workspaceId: string, name: string) {
  const res = await admin.createOAuthClient(
    {
      workspaceId,
      name,
      confidential: true,
      grantTypes: ["client_credentials"],
      scopes: ["api.read"],
    },
    as(rootKey),
  );
  return { clientId: res.client?.clientId as string, secret: res.clientSecret };
}

/** A client's own token for the resource, from a workspace's token endpoint. */
async function machineToken(workspaceId: string, id: string, secret: string) {
  const res = await fetch(`${keygate.config.issuer}/w/${workspaceId}/oauth2/token`, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}` },
    body: new URLSearchParams({ grant_type: "client_credentials", resource }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, string> };
}

beforeAll(async () => {
  const port = await freePort();
  keygate = await startTestKeygate({
    KEYGATE_PORT: String(port),
    KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
  });
  rootKey = keygate.bootstrapped?.adminKey as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  introspection = createClient(TokenIntrospectionService, transport);
  factors = createClient(FactorService, transport);
  a = await side("a");
  b = await side("b");
  for (const v of [b.id, b.name, b.slug]) bMarkers.add(v);
  remember(b.owner);
  remember(b.member);
  // The deployment admin adds one of A's members to B as well; B writes its own metadata.
  const inA = await person(a.id, Role.MEMBER, "shared");
  await admin.provisionUser(
    { email: inA.email, workspaceId: b.id, role: Role.MEMBER },
    as(rootKey),
  );
  const res = await auth.login({ email: inA.email, password, workspaceId: b.id });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  const t = res.result.value;
  const inB = {
    ...inA,
    sessionId: t.sessionId,
    accessToken: t.accessToken,
    refreshToken: t.refreshToken,
  };
  shared = { email: inA.email, userId: inA.userId, inA, inB };
  await admin.updateUserMetadata({ userId: shared.userId, metadata: { note: bSecret } }, as(b.key));
  // The account's authenticator app in B: a factor of B's membership, which nothing A does
  // may remove or use.
  const enrolled = await factors.enrollTotp({}, as(inB.accessToken));
  const code = new TOTP({ secret: Secret.fromBase32(enrolled.secret) }).generate();
  await factors.confirmTotp({ code }, as(inB.accessToken));
  bMarkers.add(bSecret);
  bMarkers.add(inB.sessionId);
  // (After the factor change, which ends the account's other sessions in B, grants included.)
  // The shared account grants B's relying party access to the resource.
  const rp = await admin.createOAuthClient(
    {
      workspaceId: b.id,
      name: `B's app ${counter}`,
      redirectUris: [redirectUri],
      confidential: true,
      firstParty: true,
    },
    as(rootKey),
  );
  const rpId = rp.client?.clientId as string;
  const config = await relyingParty(`${keygate.config.issuer}/w/${b.id}`, rpId, rp.clientSecret);
  const oauth = createClient(OAuthService, transport);
  const granted = await grantThroughRpcs(oauth, config, {
    redirectUri,
    accessToken: inB.accessToken,
    scope: "email",
    resources: [resource],
  });
  const bMachine = await machineClient(b.id, `B's worker ${counter}`);
  const bToken = await machineToken(b.id, bMachine.clientId, bMachine.secret);
  bProvider = {
    clientId: rpId,
    grantToken: granted.access_token,
    grantSessionId: (
      await introspection.introspect({ token: granted.access_token, resource }, as(b.key))
    ).sid,
    machineId: bMachine.clientId,
    machineSecret: bMachine.secret,
    machineToken: bToken.body.access_token as string,
  };
  for (const v of [rpId, bMachine.clientId, bProvider.grantSessionId]) bMarkers.add(v);
  aMachine = await machineClient(a.id, "A's worker");
});
afterAll(async () => {
  await keygate?.stop();
});

const json = (v: unknown) =>
  JSON.stringify(v, (_k, x) =>
    typeof x === "bigint"
      ? x.toString()
      : x instanceof Uint8Array
        ? Buffer.from(x).toString("hex")
        : x,
  );

/** Runs a call and answers everything the caller sees: the answer or the error with its details. */
async function seen(call: () => Promise<unknown>): Promise<string> {
  return call().then(json, (e) => {
    const error = ConnectError.from(e);
    const metadata: Record<string, string> = {};
    error.metadata.forEach((value, key) => {
      metadata[key] = value;
    });
    return json({
      code: error.code,
      message: error.message,
      details: error.details,
      metadata,
    });
  });
}

type Step = { name: string; request: unknown; run: () => Promise<unknown> };

/** The callers of A: its scoped admin key, its owner and its member (tokens of workspace A). */
const callerOfA = fc.constantFrom(
  () => as(a.key),
  () => as(a.owner.accessToken),
  () => as(a.member.accessToken),
);
/** Identifiers the caller may use: A's own, B's, or made up. */
const workspaceId = fc.constantFrom(
  () => a.id,
  () => b.id,
  () => "",
  () => crypto.randomUUID(),
);
const userId = fc.constantFrom(
  () => a.member.userId,
  () => b.member.userId,
  () => b.owner.userId,
  () => crypto.randomUUID(),
);
const sessionId = fc.constantFrom(
  () => a.member.sessionId,
  () => b.member.sessionId,
);
const bToken = fc.constantFrom(
  () => b.member.accessToken,
  () => b.owner.accessToken,
  () => b.member.refreshToken,
);

const role = fc.constantFrom(Role.MEMBER, Role.ADMIN, Role.OWNER);

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.tuple(callerOfA, userId).map(([who, id]) => {
    const request = { userId: id() };
    return { name: "GetUser", request, run: () => admin.getUser(request, who()) };
  }),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { workspaceId: ws() };
    return { name: "ListUsers", request, run: () => admin.listUsers(request, who()) };
  }),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { workspaceId: ws() };
    return { name: "GetWorkspace", request, run: () => admin.getWorkspace(request, who()) };
  }),
  callerOfA.map((who) => ({
    name: "ListWorkspaces",
    request: {},
    run: () => admin.listWorkspaces({}, who()),
  })),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { workspaceId: ws() };
    return { name: "ListMembers", request, run: () => admin.listMembers(request, who()) };
  }),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { workspaceId: ws() };
    return { name: "ListAuditEvents", request, run: () => admin.listAuditEvents(request, who()) };
  }),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { workspaceId: ws() };
    return { name: "ListAdminKeys", request, run: () => admin.listAdminKeys(request, who()) };
  }),
  fc.tuple(callerOfA, userId).map(([who, id]) => {
    const request = { userId: id(), reason: "property test" };
    return { name: "BlockUser", request, run: () => admin.blockUser(request, who()) };
  }),
  fc.tuple(callerOfA, userId).map(([who, id]) => {
    const request = { userId: id(), metadata: { tampered: true }, merge: true };
    return {
      name: "UpdateUserMetadata",
      request,
      run: () => admin.updateUserMetadata(request, who()),
    };
  }),
  fc.tuple(callerOfA, userId, workspaceId).map(([who, id, ws]) => {
    const request = { userId: id(), workspaceId: ws() };
    return {
      name: "RevokeUserSessions",
      request,
      run: () => admin.revokeUserSessions(request, who()),
    };
  }),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { workspaceId: ws(), name: "renamed by A" };
    return { name: "UpdateWorkspace", request, run: () => admin.updateWorkspace(request, who()) };
  }),
  fc.tuple(callerOfA, userId).map(([who, id]) => {
    const request = { workspaceId: b.id, userId: id(), role: Role.ADMIN };
    return { name: "UpdateMember", request, run: () => admin.updateMember(request, who()) };
  }),
  fc.tuple(callerOfA, workspaceId, fc.boolean()).map(([who, ws, sharedOne]) => {
    const request = { workspaceId: ws(), userId: sharedOne ? shared.userId : b.member.userId };
    return {
      name: "ResetMemberFactors",
      request,
      run: () => admin.resetMemberFactors(request, who()),
    };
  }),
  fc.tuple(bToken).map(([token]) => {
    const request = { token: token() };
    return {
      name: "Introspect",
      request,
      run: () => introspection.introspect(request, as(a.key)),
    };
  }),
  fc.tuple(workspaceId).map(([ws]) => ({
    name: "GetSession",
    request: {},
    run: () => auth.getSession({}, as(a.member.accessToken, ws())),
  })),
  fc.tuple(workspaceId).map(([ws]) => ({
    name: "ListSessions",
    request: {},
    run: () => auth.listSessions({}, as(a.owner.accessToken, ws())),
  })),
  fc.tuple(sessionId).map(([id]) => {
    const request = { sessionId: id() };
    return {
      name: "RevokeSession",
      request,
      run: () => auth.revokeSession(request, as(a.owner.accessToken)),
    };
  }),
  fc.tuple(workspaceId).map(([ws]) => {
    const request = { workspaceId: ws() };
    return {
      name: "SwitchWorkspace",
      request,
      run: () => auth.switchWorkspace(request, as(a.member.accessToken)),
    };
  }),
  fc.constant(null).map(() => {
    const request = { email: b.member.email, password, workspaceId: a.id };
    return { name: "Login (B's user in A)", request, run: () => auth.login(request) };
  }),
  // The account both workspaces share, as A may treat its own membership of it.
  fc
    .tuple(
      callerOfA,
      fc.constantFrom(
        () => shared.email,
        () => b.member.email,
        () => `invited-${Date.now()}-${++counter}@example.test`,
      ),
      role,
    )
    .map(([who, address, r]) => {
      const request = { workspaceId: a.id, email: address(), role: r };
      return {
        name: "AddMember (by address)",
        request,
        run: async () => {
          const res = await admin.addMember(request, who());
          // The invitation (ListMembers) names the account's id and the address A sent.
          if (res.membership)
            for (const v of [res.membership.userId, request.email]) invitedByA.add(v);
          return res;
        },
      };
    }),
  fc
    .tuple(
      callerOfA,
      role,
      fc.constantFrom(
        MembershipStatus.UNSPECIFIED,
        MembershipStatus.ACTIVE,
        MembershipStatus.DISABLED,
      ),
    )
    .map(([who, r, status]) => {
      const request = { workspaceId: a.id, userId: shared.userId, role: r, status };
      return {
        name: "UpdateMember (shared, in A)",
        request,
        run: () => admin.updateMember(request, who()),
      };
    }),
  fc.tuple(callerOfA, fc.boolean()).map(([who, merge]) => {
    const request = { userId: shared.userId, metadata: { tampered: true }, merge };
    return {
      name: "UpdateUserMetadata (shared)",
      request,
      run: () => admin.updateUserMetadata(request, who()),
    };
  }),
  callerOfA.map((who) => {
    const request = { userId: shared.userId };
    return {
      name: "MarkEmailVerified (shared)",
      request,
      run: () => admin.markEmailVerified(request, who()),
    };
  }),
  callerOfA.map((who) => {
    const request = { userId: shared.userId, reason: "property test" };
    return { name: "BlockUser (shared)", request, run: () => admin.blockUser(request, who()) };
  }),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { name: `minted-${++counter}`, workspaceId: ws(), role: AdminKeyRole.ADMIN };
    return {
      name: "CreateAdminKey",
      request,
      run: () => admin.createAdminKey(request, who()),
    };
  }),
  fc
    .constantFrom(
      () => shared.email,
      () => b.member.email,
    )
    .map((address) => {
      const request = { email: address(), password: "a wrong guess", workspaceId: a.id };
      return { name: "Login (wrong password, in A)", request, run: () => auth.login(request) };
    }),
  fc.constant(null).map(() => {
    const request = { currentPassword: "a wrong guess", newPassword: "another password of A's" };
    return {
      name: "ChangePassword (shared's session in A)",
      request,
      run: () => auth.changePassword(request, as(shared.inA.accessToken)),
    };
  }),
  // B's provider: its clients, the shared account's grant there, its tokens for the resource.
  fc
    .tuple(
      callerOfA,
      workspaceId,
      fc.constantFrom(
        () => "",
        () => bProvider.clientId,
      ),
      fc.constantFrom(
        () => "",
        () => shared.userId,
      ),
    )
    .map(([who, ws, clientId, user]) => {
      const request = { workspaceId: ws(), clientId: clientId(), userId: user() };
      return { name: "ListGrants (admin)", request, run: () => admin.listGrants(request, who()) };
    }),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { workspaceId: ws(), userId: shared.userId, clientId: bProvider.clientId };
    return {
      name: "RevokeGrants (B's client)",
      request,
      run: () => admin.revokeGrants(request, who()),
    };
  }),
  fc.tuple(callerOfA, workspaceId).map(([who, ws]) => {
    const request = { workspaceId: ws() };
    return {
      name: "ListOAuthClients",
      request,
      run: () => admin.listOAuthClients(request, who()),
    };
  }),
  fc
    .tuple(
      callerOfA,
      workspaceId,
      fc.constantFrom(
        () => bProvider.clientId,
        () => bProvider.machineId,
      ),
      fc.boolean(),
    )
    .map(([who, ws, clientId, remove]) => {
      const request = { workspaceId: ws(), clientId: clientId() };
      return remove
        ? {
            name: "DeleteOAuthClient (B's)",
            request,
            run: () => admin.deleteOAuthClient(request, who()),
          }
        : {
            name: "RotateOAuthClientSecret (B's)",
            request,
            run: () => admin.rotateOAuthClientSecret(request, who()),
          };
    }),
  fc
    .tuple(
      fc.constantFrom(
        () => shared.inA.accessToken,
        () => a.member.accessToken,
      ),
      workspaceId,
    )
    .map(([token, ws]) => ({
      name: "ListGrants (the account's, in A)",
      request: {},
      run: () => auth.listGrants({}, as(token(), ws())),
    })),
  fc.constant(null).map(() => {
    const request = { clientId: bProvider.clientId };
    return {
      name: "RevokeGrant (shared's session in A, B's client)",
      request,
      run: () => auth.revokeGrant(request, as(shared.inA.accessToken)),
    };
  }),
  fc
    .tuple(
      fc.constantFrom(
        () => bProvider.grantToken,
        () => bProvider.machineToken,
      ),
      fc.constantFrom(
        () => resource,
        () => "",
      ),
    )
    .map(([token, r]) => {
      const request = { token: token(), resource: r() };
      return {
        name: "Introspect (B's provider tokens)",
        request,
        run: () => introspection.introspect(request, as(a.key)),
      };
    }),
  fc
    .constantFrom(
      () => [b.id, aMachine.clientId, aMachine.secret] as const,
      () => [a.id, bProvider.machineId, bProvider.machineSecret] as const,
    )
    .map((pick) => {
      const [ws, id, secret] = pick();
      return {
        name: "client_credentials across workspaces",
        request: { workspaceId: ws, clientId: id },
        run: async () => {
          const res = await machineToken(ws, id, secret);
          if (res.status === 200) throw new Error(`a client got a token elsewhere: ${ws}`);
          return res;
        },
      };
    }),
  // Workspace B carries on meanwhile: new users and sessions that A must not see either.
  fc.constant(null).map(() => ({
    name: "B provisions and signs in a user",
    request: null,
    run: async () => remember(await person(b.id, Role.MEMBER, "b-new")),
  })),
);

describe("SECURITY.md 21: no sequence of calls shows workspace B's data to a caller of A", {
  timeout: 180_000,
}, () => {
  it("random call sequences of A's callers, B's identifiers mixed in, never reveal or change B", async () => {
    const bBefore = await admin.getWorkspace({ workspaceId: b.id }, as(rootKey));
    const grantsOfB = async () =>
      (await admin.listGrants({ workspaceId: b.id }, as(b.key))).grants.map((g) => [
        g.clientId,
        g.userId,
      ]);
    expect(await grantsOfB()).toEqual([[bProvider.clientId, shared.userId]]);
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 10 }), async (steps) => {
        for (const s of steps) {
          const shown = await seen(s.run);
          if (s.request === null) continue; // B's own step
          const sent = json(s.request);
          for (const marker of bMarkers) {
            if (sent.includes(marker) || invitedByA.has(marker)) continue;
            expect(shown.includes(marker), `${s.name} ${sent} showed ${marker}: ${shown}`).toBe(
              false,
            );
          }
        }
      }),
      { numRuns: 30 },
    );
    // Nothing A tried changed B: its name, its members' access and their metadata.
    const bAfter = await admin.getWorkspace({ workspaceId: b.id }, as(rootKey));
    expect(bAfter.workspace?.name).toBe(bBefore.workspace?.name);
    for (const m of [b.owner, b.member]) {
      const user = await admin.getUser({ userId: m.userId }, as(rootKey));
      expect(json(user.user?.metadata ?? {})).not.toContain("tampered");
      const login = await auth.login({ email: m.email, password, workspaceId: b.id });
      expect(login.result.case).toBe("tokens");
      expect((await introspection.introspect({ token: m.accessToken }, as(b.key))).active).toBe(
        true,
      );
    }
    const members = await admin.listMembers({ workspaceId: b.id }, as(rootKey));
    expect(members.memberships.find((x) => x.userId === b.member.userId)?.role).toBe(Role.MEMBER);
    // B's view of the account it shares with A, and the account's way into B, are B's.
    const sharedInB = members.memberships.find((x) => x.userId === shared.userId);
    expect([sharedInB?.role, sharedInB?.status]).toEqual([Role.MEMBER, MembershipStatus.ACTIVE]);
    expect(sharedInB?.metadata).toEqual({ note: bSecret });
    const bView = await admin.getUser({ userId: shared.userId }, as(b.key));
    expect([bView.user?.metadata, bView.user?.blocked, bView.user?.emailVerified]).toEqual([
      { note: bSecret },
      false,
      true,
    ]);
    expect(
      (await introspection.introspect({ token: shared.inB.accessToken }, as(b.key))).active,
    ).toBe(true);
    // Its way into B still asks for B's own factor, which is still there.
    const again = await auth.login({ email: shared.email, password, workspaceId: b.id });
    expect(again.result.case).toBe("pendingLogin");
    expect((again.result.value as { factors: FactorType[] }).factors).toEqual([
      FactorType.TOTP,
      FactorType.RECOVERY_CODE,
    ]);
    const bFactors = await factors.listFactors({}, as(shared.inB.accessToken));
    expect([bFactors.totpCreateTime !== undefined, bFactors.recoveryCodesLeft]).toEqual([true, 10]);
    // B's provider is as it was: its clients, the grant and the tokens for the resource.
    const bClients = await admin.listOAuthClients({ workspaceId: b.id }, as(rootKey));
    expect(bClients.clients.map((c) => c.clientId).sort()).toEqual(
      [bProvider.clientId, bProvider.machineId].sort(),
    );
    expect(await grantsOfB()).toEqual([[bProvider.clientId, shared.userId]]);
    for (const token of [bProvider.grantToken, bProvider.machineToken]) {
      expect((await introspection.introspect({ token, resource }, as(b.key))).active).toBe(true);
    }
    expect((await machineToken(b.id, bProvider.machineId, bProvider.machineSecret)).status).toBe(
      200,
    );
    // And B's audit log records nothing that A's callers did.
    const aKeys = await admin.listAdminKeys({ workspaceId: a.id }, as(rootKey));
    const actorsOfA = new Set([
      `user:${a.owner.userId}`,
      `user:${a.member.userId}`,
      ...aKeys.adminKeys.map((k) => `admin_key:${k.id}`),
    ]);
    const bEvents = await admin.listAuditEvents({ workspaceId: b.id, pageSize: 1000 }, as(rootKey));
    expect(bEvents.events.filter((e) => actorsOfA.has(e.actor))).toEqual([]);
  });
});
