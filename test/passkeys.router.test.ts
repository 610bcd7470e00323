import { randomBytes } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { sql } from "../src/db/sql.js";
import { withTenant } from "../src/db/with-tenant.js";
import { guessSubject } from "../src/domain/lockout.js";
import type { SpentChallenge } from "../src/repositories/passkey-challenges.js";
import {
  insertPasskey,
  recordPasskeySignIn,
  spendChallengeForAssertion,
} from "../src/repositories/passkeys.js";
import { bearer, type Provisioner, signedIn } from "./support/fixtures.js";
import { type RouterKeygate, startRouterKeygate } from "./support/router.js";

/**
 * The two statements of a username-less passkey sign-in (repositories/passkeys.ts): the
 * challenge spent with the credential, its member and account read, and the sign-in's writes.
 * Tenant-scoped like every repository: from another workspace the credential is not there
 * and a sign-in with it writes nothing.
 */

let keygate: RouterKeygate;
let by: Provisioner;
let workspaceA: string;
let workspaceB: string;

beforeAll(async () => {
  keygate = await startRouterKeygate();
  const admin = createClient(AdminService, keygate.transport);
  const auth = createClient(AuthService, keygate.transport);
  const rootKey = keygate.bootstrapped.adminKey;
  workspaceA = keygate.bootstrapped.workspaceId;
  by = { admin, auth, adminKey: rootKey, workspaceId: workspaceA };
  const other = await admin.createWorkspace(
    { name: "Other", slug: `other-${Date.now()}` },
    bearer(rootKey),
  );
  workspaceB = other.workspace?.id as string;
});
afterAll(async () => {
  await keygate?.stop();
});

const countRow = z.object({ count: z.number() });

/** A passkey of workspace A's member, and what a sign-in with it writes. */
async function aPasskey(tag: string) {
  const ada = await signedIn(by, tag);
  const now = new Date();
  const credentialId = randomBytes(32);
  const passkey = await withTenant(keygate.database.pool, workspaceA, (tx) =>
    insertPasskey(tx, {
      workspaceId: workspaceA,
      userId: ada.userId,
      credentialId,
      publicKey: randomBytes(77),
      signCount: 0,
      transports: ["internal"],
      backedUp: false,
      deviceType: "singleDevice",
      name: "Test",
      now,
    }),
  );
  if (!passkey) throw new Error("no passkey");
  const challenge = (workspaceId: string): SpentChallenge => ({
    workspaceId,
    userId: null,
    purpose: "sign_in",
    hash: randomBytes(32),
    userVerification: "required",
    now,
    expiresAt: new Date(now.getTime() + 60_000),
  });
  const signIn = (workspaceId: string, previousCount: number, signCount: number) => ({
    use: { workspaceId, id: passkey.id, previousCount, signCount, backedUp: true, now },
    session: {
      workspaceId,
      userId: ada.userId,
      ipAddress: null,
      userAgent: null,
      now,
      idleExpiresAt: new Date(now.getTime() + 3_600_000),
      expiresAt: new Date(now.getTime() + 86_400_000),
      accessExpiresAt: new Date(now.getTime() + 960_000),
      amr: ["swk", "mfa"],
    },
    refreshTokenHash: randomBytes(32),
    audit: {
      type: "login_succeeded",
      workspaceId,
      userId: ada.userId,
      outcome: "success" as const,
      at: now,
    },
    lockoutSubject: guessSubject(ada.email, null),
  });
  return { ada, passkey, credentialId, challenge, signIn };
}

const failures = (subject: string) =>
  keygate.database.pool.oneFirst(sql.type(countRow)`
    SELECT count(*)::int AS count FROM login_failures WHERE email_normalized = ${subject}`);
const failLogin = (subject: string) =>
  keygate.database.pool.query(sql.type(z.object({}))`
    INSERT INTO login_failures (email_normalized, failed_count, updated_at)
    VALUES (${subject}, 3, now())
    ON CONFLICT (email_normalized) DO UPDATE SET failed_count = 3`);

describe("a passkey sign-in's statements", () => {
  it("spend the challenge once, reading the credential with its member and account", async () => {
    const { ada, passkey, credentialId, challenge } = await aPasskey("pk-read");
    const pool = keygate.database.pool;
    const spent = challenge(workspaceA);
    const read = await withTenant(pool, workspaceA, (tx) =>
      spendChallengeForAssertion(tx, { workspaceId: workspaceA, credentialId, challenge: spent }),
    );
    expect(read).toMatchObject({
      id: passkey.id,
      user_id: ada.userId,
      sign_count: 0,
      member_role: "member",
      member_status: "active",
      user_email: ada.email,
      user_blocked: false,
      fresh: true,
    });
    const again = await withTenant(pool, workspaceA, (tx) =>
      spendChallengeForAssertion(tx, { workspaceId: workspaceA, credentialId, challenge: spent }),
    );
    expect(again?.fresh).toBe(false);
  });

  it("write the counter, session, refresh token and audit row and clear the failed logins, once per counter", async () => {
    const { ada, passkey, signIn } = await aPasskey("pk-write");
    const pool = keygate.database.pool;
    const subject = guessSubject(ada.email, null);
    await failLogin(subject);
    const sessionId = await withTenant(pool, workspaceA, (tx) =>
      recordPasskeySignIn(tx, signIn(workspaceA, 0, 1)),
    );
    expect(sessionId).toBeTypeOf("string");
    const written = await pool.oneFirst(sql.type(countRow)`
      SELECT ((SELECT count(*) FROM sessions
               WHERE id = ${sessionId} AND amr = ARRAY['swk', 'mfa'] AND client_id IS NULL)
              + (SELECT count(*) FROM refresh_tokens WHERE session_id = ${sessionId})
              + (SELECT count(*) FROM audit_events
                 WHERE session_id = ${sessionId} AND type = 'login_succeeded')
              + (SELECT count(*) FROM passkeys
                 WHERE id = ${passkey.id} AND sign_count = 1 AND backed_up
                   AND last_used_at IS NOT NULL))::int AS count`);
    expect(written).toBe(4);
    expect(await failures(subject)).toBe(0);

    // Another assertion with the same counter lost the race: nothing is written or cleared.
    await failLogin(subject);
    const late = await withTenant(pool, workspaceA, (tx) =>
      recordPasskeySignIn(tx, signIn(workspaceA, 0, 1)),
    );
    expect(late).toBeNull();
    expect(await failures(subject)).toBe(1);
    const sessions = await pool.oneFirst(sql.type(countRow)`
      SELECT count(*)::int AS count FROM sessions WHERE user_id = ${ada.userId}`);
    // The fixture's password login and the one sign-in.
    expect(sessions).toBe(2);
  });

  it("SECURITY.md 41: from another workspace the credential is not there and a sign-in with it writes nothing", async () => {
    const { ada, passkey, credentialId, challenge, signIn } = await aPasskey("pk-other");
    const pool = keygate.database.pool;
    const read = await withTenant(pool, workspaceB, (tx) =>
      spendChallengeForAssertion(tx, {
        workspaceId: workspaceB,
        credentialId,
        challenge: challenge(workspaceB),
      }),
    );
    expect(read).toBeNull();
    // Named as workspace A's, from a transaction of B: row-level security hides A's rows.
    const asA = await withTenant(pool, workspaceB, (tx) =>
      spendChallengeForAssertion(tx, {
        workspaceId: workspaceA,
        credentialId,
        challenge: challenge(workspaceB),
      }),
    ).catch((e: unknown) => e);
    expect(asA === null || asA instanceof Error).toBe(true);
    const subject = guessSubject(ada.email, null);
    await failLogin(subject);
    const session = await withTenant(pool, workspaceB, (tx) =>
      recordPasskeySignIn(tx, signIn(workspaceB, 0, 1)),
    );
    expect(session).toBeNull();
    expect(await failures(subject)).toBe(1);
    const counter = await pool.oneFirst(sql.type(countRow)`
      SELECT sign_count::int AS count FROM passkeys WHERE id = ${passkey.id}`);
    expect(counter).toBe(0);
  });
});
