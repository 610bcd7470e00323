import { createHash } from "node:crypto";
import { toJsonString } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { decodeProtectedHeader } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  AdminService,
  ListAdminKeysResponseSchema,
  ListSigningKeysResponseSchema,
} from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { AdminKeyRole, SigningKeyPurpose, SigningKeyStatus } from "../gen/keygate/v1/types_pb.js";
import { ManualClock } from "../src/clock.js";
import { sql } from "../src/db/sql.js";
import {
  retiredKeyPublishMs,
  signingKeyPromotionDelayMs,
  signingKeySetMaxAgeMs,
} from "../src/domain/signing-key-rotation.js";
import { insertWorkspace } from "../src/repositories/workspaces.js";
import { failure } from "./support/failure.js";
import { uniqueEmail } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let clock: ManualClock;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
/** The bootstrap key: deployment-wide, admin, may introspect. */
let rootKey: string;
let defaultWorkspaceId: string;
let otherWorkspaceId: string;

const password = "correct horse battery staple";
let counter = 0;

beforeAll(async () => {
  clock = new ManualClock();
  // Sign-ups send mail; an SMTP server keeps it off the console.
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({ KEYGATE_SMTP_URL: smtp.url }, { clock });
  rootKey = keygate.bootstrapped?.adminKey as string;
  defaultWorkspaceId = keygate.bootstrapped?.workspaceId as string;
  otherWorkspaceId = (
    await insertWorkspace(keygate.database.pool, { name: "Other", slug: `other-${Date.now()}` })
  ).id;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
});
afterAll(async () => {
  await keygate?.stop();
  await smtp?.stop();
});

const as = (token: string, workspaceId?: string) => ({
  headers: {
    authorization: `Bearer ${token}`,
    ...(workspaceId ? { "x-workspace-id": workspaceId } : {}),
  },
});

async function newKey(
  by: string,
  input: { workspaceId?: string; role?: AdminKeyRole; introspect?: boolean; expireAt?: number },
) {
  const res = await admin.createAdminKey(
    {
      name: `key-${++counter}`,
      workspaceId: input.workspaceId ?? "",
      role: input.role ?? AdminKeyRole.ADMIN,
      introspect: input.introspect ?? false,
      ...(input.expireAt !== undefined ? { expireTime: timestampFromMs(input.expireAt) } : {}),
    },
    as(by),
  );
  return { secret: res.secret, key: res.adminKey as NonNullable<typeof res.adminKey> };
}

/** Signs a user up in a workspace (role member) and logs in. */
async function signedInMember(workspaceId = defaultWorkspaceId) {
  const email = uniqueEmail("member");
  await auth.signUp({ email, password }, { headers: { "x-workspace-id": workspaceId } });
  return login(email, workspaceId);
}

async function login(email: string, workspaceId = defaultWorkspaceId) {
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  return { email, tokens: res.result.value };
}

const textRow = z.object({ text: z.string() });

/** Every column of every admin key and audit event, as text. */
async function storedText(): Promise<string> {
  const rows = await keygate.database.pool.any(sql.type(textRow)`
    SELECT row_to_json(k)::text AS text FROM admin_keys k
    UNION ALL SELECT row_to_json(a)::text AS text FROM audit_events a`);
  return rows.map((r) => r.text).join("\n");
}

describe("CreateAdminKey", () => {
  it("answers the secret once, stores only its SHA-256, and the key works at once", async () => {
    const { secret, key } = await newKey(rootKey, { workspaceId: defaultWorkspaceId });
    expect(secret).toMatch(/^kg_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}$/);
    expect(secret.startsWith(`${key.prefix}_`)).toBe(true);
    expect(key).toMatchObject({
      workspaceId: defaultWorkspaceId,
      role: AdminKeyRole.ADMIN,
      introspect: false,
    });

    // A call that needs workspace admin succeeds with it.
    const child = await newKey(secret, {
      workspaceId: defaultWorkspaceId,
      role: AdminKeyRole.READ_ONLY,
    });
    expect(child.key.workspaceId).toBe(defaultWorkspaceId);
    const listed = await admin.listAdminKeys({}, as(secret));
    expect(listed.adminKeys.map((k) => k.id)).toEqual(
      expect.arrayContaining([key.id, child.key.id]),
    );

    const hash = await keygate.database.pool.oneFirst(
      sql.type(
        z.object({ secret_hash: z.instanceof(Buffer) }),
      )`SELECT secret_hash FROM admin_keys WHERE id = ${key.id}`,
    );
    expect(hash.equals(createHash("sha256").update(secret).digest())).toBe(true);

    // SECURITY.md 23: the secret is in no answer, no row and no audit event.
    const tail = secret.slice(key.prefix.length + 1);
    const everywhere = [
      toJsonString(ListAdminKeysResponseSchema, await admin.listAdminKeys({}, as(rootKey))),
      toJsonString(ListAdminKeysResponseSchema, listed),
      await storedText(),
    ].join("\n");
    for (const s of [secret, tail, child.secret, child.secret.slice(12)]) {
      expect(everywhere).not.toContain(s);
    }

    const events = await keygate.database.pool.any(sql.type(
      z.object({ actor: z.string().nullable(), workspace_id: z.string().nullable() }),
    )`SELECT actor, workspace_id FROM audit_events
      WHERE type = 'admin_key_created' AND details->>'admin_key_id' = ${child.key.id}`);
    expect(events).toEqual([{ actor: `admin_key:${key.id}`, workspace_id: defaultWorkspaceId }]);
  });

  it("a deployment admin makes deployment-wide keys; the role must be given", async () => {
    const { key, secret } = await newKey(rootKey, { role: AdminKeyRole.READ_ONLY });
    expect(key.workspaceId).toBe("");
    await expect(admin.listSigningKeys({}, as(secret))).resolves.toBeTruthy();

    const unspecified = await failure(
      admin.createAdminKey({ name: "x", role: AdminKeyRole.UNSPECIFIED }, as(rootKey)),
    );
    expect(unspecified).toMatchObject({ code: Code.InvalidArgument, fields: ["role"] });
    const unknownRole = await failure(
      admin.createAdminKey({ name: "x", role: 42 as AdminKeyRole }, as(rootKey)),
    );
    expect(unknownRole).toMatchObject({ code: Code.InvalidArgument, fields: ["role"] });
  });

  it("SECURITY.md 22: malformed input is INVALID_ARGUMENT with the field", async () => {
    const cases: [Parameters<typeof admin.createAdminKey>[0], string][] = [
      [{ name: "", role: AdminKeyRole.ADMIN }, "name"],
      [{ name: "n".repeat(201), role: AdminKeyRole.ADMIN }, "name"],
      [{ name: "x", role: AdminKeyRole.ADMIN, workspaceId: "not-a-uuid" }, "workspace_id"],
      [
        {
          name: "x",
          role: AdminKeyRole.ADMIN,
          workspaceId: "00000000-0000-4000-8000-000000000000",
        },
        "workspace_id",
      ],
      [
        {
          name: "x",
          role: AdminKeyRole.ADMIN,
          expireTime: timestampFromMs(clock.now().getTime() - 1000),
        },
        "expire_time",
      ],
      [
        { name: "x", role: AdminKeyRole.ADMIN, expireTime: { seconds: 10n ** 15n, nanos: 0 } },
        "expire_time",
      ],
    ];
    for (const [req, field] of cases) {
      const f = await failure(admin.createAdminKey(req, as(rootKey)));
      expect(f, field).toMatchObject({ code: Code.InvalidArgument, fields: [field] });
    }
    const badList = await failure(admin.listAdminKeys({ pageToken: "garbage" }, as(rootKey)));
    expect(badList).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN" });
    const badRevoke = await failure(admin.revokeAdminKey({ adminKeyId: "nope" }, as(rootKey)));
    expect(badRevoke).toMatchObject({ code: Code.InvalidArgument, fields: ["admin_key_id"] });
    const noCredentials = await failure(admin.createAdminKey({ name: "x", role: 2 }));
    expect(noCredentials.code).toBe(Code.Unauthenticated);
  });
});

describe("RevokeAdminKey", () => {
  it("takes effect at once: the next call with the key is UNAUTHENTICATED", async () => {
    const { key, secret } = await newKey(rootKey, { workspaceId: defaultWorkspaceId });
    await admin.listAdminKeys({}, as(secret));
    const res = await admin.revokeAdminKey({ adminKeyId: key.id }, as(rootKey));
    expect(res.adminKey?.revokeTime).toBeDefined();
    const after = await failure(admin.listAdminKeys({}, as(secret)));
    expect(after).toMatchObject({ code: Code.Unauthenticated, reason: "UNAUTHENTICATED" });

    // A second revocation answers the same key and time, and writes no second event.
    const again = await admin.revokeAdminKey({ adminKeyId: key.id }, as(rootKey));
    expect(again.adminKey?.revokeTime).toEqual(res.adminKey?.revokeTime);
    const events = await keygate.database.pool.anyFirst(sql.type(z.object({ actor: z.string() }))`
      SELECT actor FROM audit_events
      WHERE type = 'admin_key_revoked' AND details->>'admin_key_id' = ${key.id}`);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatch(/^admin_key:/);

    const unknown = await failure(
      admin.revokeAdminKey({ adminKeyId: "00000000-0000-4000-8000-000000000000" }, as(rootKey)),
    );
    expect(unknown.code).toBe(Code.NotFound);
  });
});

describe("SECURITY.md 21: scoping", () => {
  it("a workspace-scoped key cannot reach the deployment or another workspace", async () => {
    const { secret: scoped } = await newKey(rootKey, { workspaceId: defaultWorkspaceId });
    const other = await newKey(rootKey, { workspaceId: otherWorkspaceId });
    const deployment = await newKey(rootKey, { role: AdminKeyRole.READ_ONLY });

    for (const workspaceId of ["", otherWorkspaceId]) {
      const f = await failure(
        admin.createAdminKey({ name: "x", workspaceId, role: AdminKeyRole.READ_ONLY }, as(scoped)),
      );
      expect(f, workspaceId).toMatchObject({
        code: Code.PermissionDenied,
        reason: "PERMISSION_DENIED",
      });
    }
    const listOther = await failure(
      admin.listAdminKeys({ workspaceId: otherWorkspaceId }, as(scoped)),
    );
    expect(listOther.code).toBe(Code.PermissionDenied);
    const own = await admin.listAdminKeys({}, as(scoped));
    expect(own.adminKeys.length).toBeGreaterThan(0);
    expect(own.adminKeys.every((k) => k.workspaceId === defaultWorkspaceId)).toBe(true);

    for (const id of [other.key.id, deployment.key.id]) {
      const f = await failure(admin.revokeAdminKey({ adminKeyId: id }, as(scoped)));
      expect(f.code).toBe(Code.NotFound);
    }
    // Still alive.
    await admin.listAdminKeys({}, as(other.secret));
    await admin.listAdminKeys({}, as(deployment.secret));

    // A workspace key never hands out introspection it does not have.
    const introspect = await failure(
      admin.createAdminKey(
        {
          name: "x",
          workspaceId: defaultWorkspaceId,
          role: AdminKeyRole.READ_ONLY,
          introspect: true,
        },
        as(scoped),
      ),
    );
    expect(introspect.code).toBe(Code.PermissionDenied);
    const granted = await newKey(rootKey, { workspaceId: otherWorkspaceId, introspect: true });
    expect(granted.key.introspect).toBe(true);

    // The deployment sees every key, or one workspace's.
    const filtered = await admin.listAdminKeys({ workspaceId: otherWorkspaceId }, as(rootKey));
    expect(filtered.adminKeys.map((k) => k.id)).toContain(other.key.id);
    expect(filtered.adminKeys.every((k) => k.workspaceId === otherWorkspaceId)).toBe(true);
  });

  it("a read-only key lists but neither creates nor revokes", async () => {
    const readOnly = await newKey(rootKey, {
      workspaceId: defaultWorkspaceId,
      role: AdminKeyRole.READ_ONLY,
    });
    const victim = await newKey(rootKey, { workspaceId: defaultWorkspaceId });
    await admin.listAdminKeys({}, as(readOnly.secret));
    const create = await failure(
      admin.createAdminKey(
        { name: "x", workspaceId: defaultWorkspaceId, role: AdminKeyRole.READ_ONLY },
        as(readOnly.secret),
      ),
    );
    expect(create.code).toBe(Code.PermissionDenied);
    const revoke = await failure(
      admin.revokeAdminKey({ adminKeyId: victim.key.id }, as(readOnly.secret)),
    );
    expect(revoke.code).toBe(Code.PermissionDenied);

    const deploymentReadOnly = await newKey(rootKey, { role: AdminKeyRole.READ_ONLY });
    for (const call of [
      () =>
        admin.createAdminKey(
          { name: "x", workspaceId: defaultWorkspaceId, role: AdminKeyRole.READ_ONLY },
          as(deploymentReadOnly.secret),
        ),
      () => admin.revokeAdminKey({ adminKeyId: victim.key.id }, as(deploymentReadOnly.secret)),
      () => admin.rotateSigningKey({}, as(deploymentReadOnly.secret)),
    ]) {
      expect((await failure(call())).code).toBe(Code.PermissionDenied);
    }
  });

  it("a member is PERMISSION_DENIED; the workspace's owner may create keys for it only", async () => {
    const { email, tokens } = await signedInMember();
    const req = { name: "by-user", workspaceId: defaultWorkspaceId, role: AdminKeyRole.ADMIN };
    const member = as(tokens.accessToken, defaultWorkspaceId);
    expect((await failure(admin.createAdminKey(req, member))).code).toBe(Code.PermissionDenied);
    expect((await failure(admin.listAdminKeys({}, member))).code).toBe(Code.PermissionDenied);

    await keygate.database.pool.query(sql.unsafe`
      UPDATE workspace_members SET role = 'owner'
      WHERE workspace_id = ${defaultWorkspaceId} AND user_id = ${tokens.userId}`);
    const owner = as((await login(email)).tokens.accessToken, defaultWorkspaceId);
    const created = await admin.createAdminKey(req, owner);
    expect(created.adminKey?.workspaceId).toBe(defaultWorkspaceId);
    await admin.listAdminKeys({}, as(created.secret));
    const listed = await admin.listAdminKeys({}, owner);
    expect(listed.adminKeys.map((k) => k.id)).toContain(created.adminKey?.id);

    for (const r of [
      { ...req, workspaceId: otherWorkspaceId },
      { ...req, workspaceId: "" },
      { ...req, introspect: true },
    ]) {
      expect((await failure(admin.createAdminKey(r, owner))).code).toBe(Code.PermissionDenied);
    }
    const actor = await keygate.database.pool.oneFirst(sql.type(z.object({ actor: z.string() }))`
      SELECT actor FROM audit_events
      WHERE type = 'admin_key_created' AND details->>'admin_key_id' = ${created.adminKey?.id ?? ""}`);
    expect(actor).toBe(`user:${tokens.userId}`);

    const revoked = await admin.revokeAdminKey({ adminKeyId: created.adminKey?.id ?? "" }, owner);
    expect(revoked.adminKey?.revokeTime).toBeDefined();
  });
});

describe("ListAdminKeys", () => {
  it("pages in a stable order without gaps or repeats", async () => {
    const workspace = await insertWorkspace(keygate.database.pool, {
      name: "Paged",
      slug: `paged-${Date.now()}`,
    });
    const made: string[] = [];
    for (let i = 0; i < 5; i++) {
      made.push((await newKey(rootKey, { workspaceId: workspace.id })).key.id);
    }
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await admin.listAdminKeys(
        { workspaceId: workspace.id, pageSize: 2, pageToken },
        as(rootKey),
      );
      expect(page.adminKeys.length).toBeLessThanOrEqual(2);
      seen.push(...page.adminKeys.map((k) => k.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 10);
    expect(pages).toBe(3);
    // The server clock stands still here, so every key has the same created_at and the id
    // breaks the tie: the pages must still join up to exactly the one-page list.
    const whole = await admin.listAdminKeys({ workspaceId: workspace.id }, as(rootKey));
    expect(seen).toEqual(whole.adminKeys.map((k) => k.id));
    expect([...seen].sort()).toEqual([...made].sort());

    const first = await admin.listAdminKeys(
      { workspaceId: workspace.id, pageSize: 2 },
      as(rootKey),
    );
    const elsewhere = await failure(
      admin.listAdminKeys({ pageSize: 2, pageToken: first.nextPageToken }, as(rootKey)),
    );
    expect(elsewhere).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_PAGE_TOKEN" });
  });
});

describe("key expiry", () => {
  it("an expiring key cannot make a key that outlives it, and stops at its expiry", async () => {
    const expireAt = clock.now().getTime() + 3_600_000;
    const { key, secret } = await newKey(rootKey, { workspaceId: defaultWorkspaceId, expireAt });
    expect(Number(key.expireTime?.seconds) * 1000).toBe(Math.floor(expireAt / 1000) * 1000);
    const later = await failure(
      admin.createAdminKey(
        {
          name: "x",
          workspaceId: defaultWorkspaceId,
          role: AdminKeyRole.READ_ONLY,
          expireTime: timestampFromMs(expireAt + 60_000),
        },
        as(secret),
      ),
    );
    expect(later.code).toBe(Code.PermissionDenied);
    const inherited = await newKey(secret, {
      workspaceId: defaultWorkspaceId,
      role: AdminKeyRole.READ_ONLY,
    });
    expect(inherited.key.expireTime).toEqual(key.expireTime);

    clock.advance(3_600_000 + 1_000);
    for (const s of [secret, inherited.secret]) {
      expect((await failure(admin.listAdminKeys({}, as(s)))).code).toBe(Code.Unauthenticated);
    }
  });
});

const privateMembers = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

async function jwksKids(): Promise<string[]> {
  const res = await fetch(`${keygate.url}/.well-known/jwks.json`);
  const body = (await res.json()) as { keys: Record<string, unknown>[] };
  for (const key of body.keys) {
    for (const m of privateMembers) expect(key).not.toHaveProperty(m);
  }
  return body.keys.map((k) => k.kid as string);
}

const kidOf = (token: string) => decodeProtectedHeader(token).kid as string;

describe("SECURITY.md 27: RotateSigningKey", () => {
  it("is for deployment admins, with a known algorithm", async () => {
    const scoped = await newKey(rootKey, { workspaceId: defaultWorkspaceId });
    expect((await failure(admin.rotateSigningKey({}, as(scoped.secret)))).code).toBe(
      Code.PermissionDenied,
    );
    expect((await failure(admin.listSigningKeys({}, as(scoped.secret)))).code).toBe(
      Code.PermissionDenied,
    );
    for (const algorithm of ["HS256", "none", "es256", "RS512"]) {
      const f = await failure(admin.rotateSigningKey({ algorithm }, as(rootKey)));
      expect(f, algorithm).toMatchObject({ code: Code.InvalidArgument, fields: ["algorithm"] });
    }
  });

  it("publishes the new key before it signs, then signs with it while the old one stays published", async () => {
    const user = await signedInMember();
    const oldToken = user.tokens.accessToken;
    const oldKid = kidOf(oldToken);
    expect(await jwksKids()).toContain(oldKid);

    const rotated = await admin.rotateSigningKey({ algorithm: "EdDSA" }, as(rootKey));
    const next = rotated.signingKey as NonNullable<typeof rotated.signingKey>;
    expect(next).toMatchObject({ algorithm: "EdDSA", status: SigningKeyStatus.NEXT });
    expect(next.createTime).toBeDefined();
    expect(next.kid).not.toBe(oldKid);

    // Published at once, not signing yet.
    expect(await jwksKids()).toEqual(expect.arrayContaining([oldKid, next.kid]));
    const beforePromotion = await login(user.email);
    expect(kidOf(beforePromotion.tokens.accessToken)).toBe(oldKid);
    clock.advance(signingKeyPromotionDelayMs - 1_000);
    expect(kidOf((await login(user.email)).tokens.accessToken)).toBe(oldKid);

    const audited = await keygate.database.pool.oneFirst(
      sql.type(
        z.object({ details: z.record(z.string(), z.unknown()) }),
      )`SELECT details FROM audit_events WHERE type = 'signing_key_rotated'`,
    );
    expect(audited).toMatchObject({ kid: next.kid, algorithm: "EdDSA" });

    // Past the delay, the next load of the key set promotes the new key; signing reloads a
    // key set older than signingKeySetMaxAgeMs.
    clock.advance(signingKeySetMaxAgeMs + 1_000);
    const after = await login(user.email);
    expect(kidOf(after.tokens.accessToken)).toBe(next.kid);
    expect(await jwksKids()).toEqual(expect.arrayContaining([oldKid, next.kid]));

    // Tokens of the old key still verify, and so do the new key's.
    const session = await auth.getSession({}, as(oldToken, defaultWorkspaceId));
    expect(session.user?.email).toBe(user.email);
    await auth.getSession({}, as(after.tokens.accessToken, defaultWorkspaceId));

    const listed = await admin.listSigningKeys({}, as(rootKey));
    const json = toJsonString(ListSigningKeysResponseSchema, listed);
    for (const m of privateMembers) expect(json).not.toContain(`"${m}"`);
    const byKid = new Map(listed.signingKeys.map((k) => [k.kid, k]));
    const oldKey = byKid.get(oldKid);
    const newKey = byKid.get(next.kid);
    expect(newKey).toMatchObject({ status: SigningKeyStatus.ACTIVE, algorithm: "EdDSA" });
    expect(newKey?.activateTime).toBeDefined();
    expect(oldKey?.status).toBe(SigningKeyStatus.RETIRED);
    const retiredAt = Number(oldKey?.retireTime?.seconds);
    expect(Number(oldKey?.unpublishTime?.seconds) - retiredAt).toBe(retiredKeyPublishMs / 1000);

    // Once every token the old key signed has expired, it leaves the key set.
    clock.advance(retiredKeyPublishMs - 1_000);
    expect(await jwksKids()).toContain(oldKid);
    clock.advance(2_000);
    const finally_ = await jwksKids();
    expect(finally_).toContain(next.kid);
    expect(finally_).not.toContain(oldKid);
  });

  it("needs no scheduler: whichever instance loads the key set after the delay promotes", async () => {
    const peer = await startPeerKeygate(keygate, {}, { clock });
    try {
      const viaPeer = createClient(
        AuthService,
        createConnectTransport({ baseUrl: peer.url, httpVersion: "2" }),
      );
      const user = await signedInMember();
      const before = kidOf(user.tokens.accessToken);
      const rotated = await admin.rotateSigningKey({}, as(rootKey));
      const kid = rotated.signingKey?.kid as string;
      // The peer's JWKS answers reload a key set older than a second, so it carries the next
      // key long before the key signs.
      clock.advance(1_000);
      const peerJwks = (await (await fetch(`${peer.url}/.well-known/jwks.json`)).json()) as {
        keys: { kid: string }[];
      };
      expect(peerJwks.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([before, kid]));

      clock.advance(signingKeyPromotionDelayMs + signingKeySetMaxAgeMs + 1_000);
      const res = await viaPeer.login({
        email: user.email,
        password,
        workspaceId: defaultWorkspaceId,
      });
      if (res.result.case !== "tokens") throw new Error("no tokens");
      expect(kidOf(res.result.value.accessToken)).toBe(kid);
      // The first instance signs with it after its own reload, and accepts the peer's tokens.
      expect(kidOf((await login(user.email)).tokens.accessToken)).toBe(kid);
      await auth.getSession({}, as(res.result.value.accessToken, defaultWorkspaceId));
      // The token the old key signed before the rotation, on both instances.
      await auth.getSession({}, as(user.tokens.accessToken, defaultWorkspaceId));
      await viaPeer.getSession({}, as(user.tokens.accessToken, defaultWorkspaceId));
      const statuses = (await admin.listSigningKeys({}, as(rootKey))).signingKeys.filter(
        (k) => k.status === SigningKeyStatus.ACTIVE && k.purpose === SigningKeyPurpose.ACCESS_TOKEN,
      );
      expect(statuses.map((k) => k.kid)).toEqual([kid]);
    } finally {
      await peer.stop();
    }
  });
});
