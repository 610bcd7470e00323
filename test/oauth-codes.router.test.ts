import { randomBytes } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { sql } from "../src/db/sql.js";
import { withTenant } from "../src/db/with-tenant.js";
import { insertMembershipIfAbsent } from "../src/repositories/memberships.js";
import {
  insertOAuthCode,
  lockOAuthCodeForExchange,
  spendOAuthCode,
} from "../src/repositories/oauth-codes.js";
import { bearer, type Provisioner, signedIn } from "./support/fixtures.js";
import { type RouterKeygate, startRouterKeygate } from "./support/router.js";

/**
 * The two statements of a code exchange (repositories/oauth-codes.ts): the code read with
 * what the exchange needs, and the code spent on its grant. Tenant-scoped like every
 * repository: from another workspace the code is not there and spending it writes nothing.
 */

let keygate: RouterKeygate;
let by: Provisioner;
let workspaceA: string;
let workspaceB: string;
let clientId: string;

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
  const client = await admin.createOAuthClient(
    { workspaceId: workspaceA, name: "App", redirectUris: ["https://app.example.test/cb"] },
    bearer(rootKey),
  );
  clientId = client.client?.clientId as string;
});
afterAll(async () => {
  await keygate?.stop();
});

/** A code of workspace A for a signed-in member, and what spending it needs. */
async function aCode(tag: string) {
  const ada = await signedIn(by, tag);
  const codeHash = randomBytes(32);
  const now = new Date();
  await withTenant(keygate.database.pool, workspaceA, (tx) =>
    insertOAuthCode(tx, {
      codeHash,
      workspaceId: workspaceA,
      clientId,
      parentSessionId: ada.sessionId,
      userId: ada.userId,
      redirectUri: "https://app.example.test/cb",
      scopes: ["openid"],
      nonce: null,
      codeChallenge: "challenge",
      resources: [],
      now,
      expiresAt: new Date(now.getTime() + 60_000),
    }),
  );
  const spend = (workspaceId: string) => ({
    codeHash,
    codeUsedAt: now,
    session: {
      workspaceId,
      userId: ada.userId,
      ipAddress: null,
      userAgent: null,
      now,
      idleExpiresAt: new Date(now.getTime() + 3_600_000),
      expiresAt: new Date(now.getTime() + 86_400_000),
      accessExpiresAt: new Date(now.getTime() + 960_000),
      amr: ["pwd"],
      grant: {
        clientId,
        parentSessionId: ada.sessionId,
        scopes: ["openid"],
        authTime: now,
        resources: [],
      },
    },
    refreshTokenHash: randomBytes(32),
    audit: {
      type: "oauth_grant_created",
      workspaceId,
      userId: ada.userId,
      outcome: "success" as const,
      at: now,
    },
  });
  return { ada, codeHash, now, spend };
}

const countRow = z.object({ count: z.number() });

describe("the code exchange's statements", () => {
  it("read the code with its live browser session, workspace settings and user, then spend it", async () => {
    const { ada, codeHash, now, spend } = await aCode("codes-spend");
    const pool = keygate.database.pool;
    const read = await withTenant(pool, workspaceA, (tx) =>
      lockOAuthCodeForExchange(tx, { workspaceId: workspaceA, codeHash, now }),
    );
    expect(read).toMatchObject({
      client_id: clientId,
      user_id: ada.userId,
      used_at: null,
      parent_id: ada.sessionId,
      parent_amr: ["pwd"],
      user_email: ada.email,
    });
    expect(read?.workspace_settings).toBeTypeOf("object");

    const spent = await withTenant(pool, workspaceA, (tx) => spendOAuthCode(tx, spend(workspaceA)));
    expect(spent).toMatchObject({ role: "member", status: "active" });
    const sessionId = spent?.session_id as string;
    const after = await withTenant(pool, workspaceA, (tx) =>
      lockOAuthCodeForExchange(tx, { workspaceId: workspaceA, codeHash, now }),
    );
    expect(after?.used_at).toBe(now.getTime());
    expect(after?.grant_session_id).toBe(sessionId);
    const rows = await pool.oneFirst(sql.type(countRow)`
      SELECT ((SELECT count(*) FROM sessions WHERE id = ${sessionId} AND client_id = ${clientId})
              + (SELECT count(*) FROM refresh_tokens WHERE session_id = ${sessionId})
              + (SELECT count(*) FROM audit_events
                 WHERE session_id = ${sessionId} AND type = 'oauth_grant_created'))::int AS count`);
    expect(rows).toBe(3);

    // A spent code is spent once: again, nothing is written.
    const again = await withTenant(pool, workspaceA, (tx) => spendOAuthCode(tx, spend(workspaceA)));
    expect(again).toMatchObject({ status: "active", session_id: null });
  });

  it("SECURITY.md 21: from another workspace the code is not there and spending it writes nothing", async () => {
    const { ada, codeHash, now, spend } = await aCode("codes-other");
    const pool = keygate.database.pool;
    const read = await withTenant(pool, workspaceB, (tx) =>
      lockOAuthCodeForExchange(tx, { workspaceId: workspaceB, codeHash, now }),
    );
    expect(read).toBeNull();
    // Named as workspace A's, from a transaction of B: row-level security hides A's rows.
    const asA = await withTenant(pool, workspaceB, (tx) =>
      lockOAuthCodeForExchange(tx, { workspaceId: workspaceA, codeHash, now }),
    );
    expect(asA).toBeNull();
    const spent = await withTenant(pool, workspaceB, (tx) => spendOAuthCode(tx, spend(workspaceB)));
    expect(spent).toBeNull();
    // A member of B too: spending A's code from B still writes nothing.
    await withTenant(pool, workspaceB, (tx) =>
      insertMembershipIfAbsent(tx, { workspaceId: workspaceB, userId: ada.userId, role: "member" }),
    );
    const asMember = await withTenant(pool, workspaceB, (tx) =>
      spendOAuthCode(tx, spend(workspaceB)),
    );
    expect(asMember).toMatchObject({ status: "active", session_id: null });
    const still = await withTenant(pool, workspaceA, (tx) =>
      lockOAuthCodeForExchange(tx, { workspaceId: workspaceA, codeHash, now }),
    );
    expect(still?.used_at).toBeNull();
    const grants = await pool.oneFirst(sql.type(countRow)`
      SELECT count(*)::int AS count FROM sessions
      WHERE user_id = ${ada.userId} AND client_id IS NOT NULL`);
    expect(grants).toBe(0);
  });
});
