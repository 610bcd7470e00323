import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { exportJWK, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { adminCommandGroups } from "../src/cli-admin-commands.js";
import { withTenant } from "../src/db/with-tenant.js";
import { insertSession } from "../src/repositories/sessions.js";
import { signedIn } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

const run = promisify(execFile);
const bin = path.resolve(import.meta.dirname, "../bin/keygate.mjs");
let keygate: TestKeygate;

beforeAll(async () => {
  keygate = await startTestKeygate();
});
afterAll(async () => {
  await keygate?.stop();
});

const defaultSlug = () => keygate.bootstrapped?.workspaceSlug as string;

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], {
      env: {
        PATH: process.env.PATH ?? "",
        KEYGATE_URL: keygate.url,
        KEYGATE_ADMIN_KEY: keygate.bootstrapped?.adminKey ?? "",
        ...env,
        // The CLI treats an empty KEYGATE_URL as unset.
      },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("keygate admin commands", { timeout: 60_000 }, () => {
  it("create, list and revoke an admin key; the revoked key no longer works", async () => {
    const created = await cli([
      "admin-key",
      "create",
      "--name",
      "ci gateway",
      "--role",
      "read_only",
      "--introspect",
    ]);
    expect(created.code).toBe(0);
    const answer = JSON.parse(created.stdout) as {
      adminKey: { id: string; role: string };
      secret: string;
    };
    expect(answer.secret).toMatch(/^kg_[A-Za-z0-9]{8}_/);
    expect(answer.adminKey.role).toBe("ADMIN_KEY_ROLE_READ_ONLY");

    const listed = await cli(["admin-key", "list"], { KEYGATE_ADMIN_KEY: answer.secret });
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(answer.adminKey.id);
    expect(listed.stdout).not.toContain(answer.secret);

    expect((await cli(["admin-key", "revoke", answer.adminKey.id])).code).toBe(0);
    const refused = await cli(["admin-key", "list"], { KEYGATE_ADMIN_KEY: answer.secret });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("Unauthenticated");
  });

  it("provisions a user idempotently", async () => {
    const args = [
      "provision-user",
      "--email",
      "cli-user@example.test",
      "--workspace",
      keygate.bootstrapped?.workspaceId as string,
      "--verified",
    ];
    const first = JSON.parse((await cli(args)).stdout) as {
      created: boolean;
      user: { emailVerified: boolean };
    };
    expect(first.created).toBe(true);
    expect(first.user.emailVerified).toBe(true);
    const again = JSON.parse((await cli(args)).stdout) as { created?: boolean };
    expect(again.created).toBe(false);
  });

  it("rotates the signing key: the new one is published as next", async () => {
    const rotated = await cli(["keys", "rotate"]);
    expect(rotated.code).toBe(0);
    const key = (JSON.parse(rotated.stdout) as { signingKey: { kid: string; status: string } })
      .signingKey;
    expect(key.status).toBe("SIGNING_KEY_STATUS_NEXT");
    expect((await cli(["keys", "list"])).stdout).toContain(key.kid);
  });

  it("creates, lists and deletes an OAuth client of the provider", async () => {
    const created = await cli([
      "clients",
      "create",
      "--workspace",
      defaultSlug(),
      "--name",
      "Grafana",
      "--redirect-uri",
      "https://grafana.example.test/login/generic_oauth",
      "--scope",
      "openid",
      "--scope",
      "email",
    ]);
    expect(created.code).toBe(0);
    const answer = JSON.parse(created.stdout) as {
      client: { clientId: string; confidential: boolean; firstParty: boolean; scopes: string[] };
      clientSecret: string;
    };
    expect(answer.client).toMatchObject({ confidential: true, firstParty: true });
    expect(answer.client.scopes).toEqual(["openid", "email"]);
    expect(answer.clientSecret).toMatch(/^kgcs_/);
    const listed = await cli(["clients", "list", "--workspace", defaultSlug()]);
    expect(listed.stdout).toContain(answer.client.clientId);
    expect(listed.stdout).not.toContain(answer.clientSecret);
    const refused = await cli([
      "clients",
      "create",
      "--workspace",
      defaultSlug(),
      "--name",
      "Bad",
      "--redirect-uri",
      "http://evil.example.test/cb",
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("redirect_uris[0]");
    const deleted = await cli([
      "clients",
      "delete",
      answer.client.clientId,
      "--workspace",
      defaultSlug(),
    ]);
    expect(deleted.code).toBe(0);
    expect((await cli(["clients", "list", "--workspace", defaultSlug()])).stdout).not.toContain(
      answer.client.clientId,
    );
  });

  it("creates a machine client (client_credentials, private_key_jwt) and rotates a secret", async () => {
    const { publicKey } = await generateKeyPair("ES256");
    const jwksFile = path.join(keygate.dataDir, "machine-jwks.json");
    await writeFile(jwksFile, JSON.stringify({ keys: [await exportJWK(publicKey)] }));
    const keyed = await cli([
      "clients",
      "create",
      "--workspace",
      defaultSlug(),
      "--name",
      "Billing worker",
      "--grant-type",
      "client_credentials",
      "--auth-method",
      "private_key_jwt",
      "--jwks-file",
      jwksFile,
      "--scope",
      "orders.read",
    ]);
    expect(keyed.code, keyed.stderr).toBe(0);
    const keyedAnswer = JSON.parse(keyed.stdout) as {
      client: { grantTypes: string[]; tokenEndpointAuthMethod: string; redirectUris?: string[] };
      clientSecret?: string;
    };
    expect(keyedAnswer.client).toMatchObject({
      grantTypes: ["client_credentials"],
      tokenEndpointAuthMethod: "private_key_jwt",
    });
    expect(keyedAnswer.clientSecret ?? "").toBe("");

    const secretClient = await cli([
      "clients",
      "create",
      "--workspace",
      defaultSlug(),
      "--name",
      "Reporter",
      "--grant-type",
      "client_credentials",
      "--auth-method",
      "client_secret_post",
    ]);
    expect(secretClient.code, secretClient.stderr).toBe(0);
    const first = JSON.parse(secretClient.stdout) as {
      client: { clientId: string };
      clientSecret: string;
    };
    const rotated = await cli([
      "clients",
      "rotate-secret",
      first.client.clientId,
      "--workspace",
      defaultSlug(),
    ]);
    expect(rotated.code, rotated.stderr).toBe(0);
    const second = JSON.parse(rotated.stdout) as { clientSecret: string };
    expect(second.clientSecret).toMatch(/^kgcs_/);
    expect(second.clientSecret).not.toBe(first.clientSecret);
  });

  it("lists and revokes a user's grant to a client", async () => {
    const created = await cli([
      "clients",
      "create",
      "--workspace",
      defaultSlug(),
      "--name",
      "Wiki",
      "--redirect-uri",
      "https://wiki.example.test/callback",
    ]);
    const clientId = (JSON.parse(created.stdout) as { client: { clientId: string } }).client
      .clientId;
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const by = {
      admin: createClient(AdminService, transport),
      auth: createClient(AuthService, transport),
      adminKey: keygate.bootstrapped?.adminKey as string,
      workspaceId: keygate.bootstrapped?.workspaceId as string,
    };
    const person = await signedIn(by, "cli-grant");
    // The session row the token endpoint writes for a grant (the code flow itself is in
    // openid-provider-grants.test.ts).
    const now = new Date();
    await withTenant(keygate.database.pool, by.workspaceId, (tx) =>
      insertSession(tx, {
        workspaceId: by.workspaceId,
        userId: person.userId,
        ipAddress: null,
        userAgent: null,
        now,
        idleExpiresAt: new Date(now.getTime() + 3_600_000),
        expiresAt: new Date(now.getTime() + 86_400_000),
        accessExpiresAt: new Date(now.getTime() + 900_000),
        amr: ["pwd"],
        grant: {
          clientId,
          parentSessionId: person.sessionId,
          scopes: ["openid"],
          authTime: now,
          resources: [],
        },
      }),
    );
    const listed = await cli([
      "grants",
      "list",
      "--workspace",
      defaultSlug(),
      "--client",
      clientId,
    ]);
    expect(listed.code).toBe(0);
    const grants = (
      JSON.parse(listed.stdout) as { grants: { userId: string; clientName: string }[] }
    ).grants;
    expect(grants).toEqual([
      expect.objectContaining({ userId: person.userId, clientName: "Wiki" }),
    ]);
    const missing = await cli(["grants", "revoke", person.email, "--workspace", defaultSlug()]);
    expect(missing.code).toBe(2);
    const revoked = await cli([
      "grants",
      "revoke",
      person.email,
      "--client",
      clientId,
      "--workspace",
      defaultSlug(),
    ]);
    expect(revoked.code).toBe(0);
    expect(JSON.parse(revoked.stdout)).toEqual({ revokedCount: 1 });
    const after = await cli([
      "grants",
      "list",
      "--workspace",
      defaultSlug(),
      "--user",
      person.email,
    ]);
    expect(JSON.parse(after.stdout).grants).toEqual([]);
  });

  it("revokes a signing key: it leaves the key set", async () => {
    const rotated = await cli(["keys", "rotate"]);
    const kid = (JSON.parse(rotated.stdout) as { signingKey: { kid: string } }).signingKey.kid;
    const revoked = await cli(["keys", "revoke", kid]);
    expect(revoked.code).toBe(0);
    expect(
      (JSON.parse(revoked.stdout) as { signingKey: { kid: string; status: string } }).signingKey,
    ).toMatchObject({ kid, status: "SIGNING_KEY_STATUS_REVOKED" });
    const jwks = (await (await fetch(`${keygate.url}/.well-known/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    expect(jwks.keys.map((k) => k.kid)).not.toContain(kid);
    const missing = await cli(["keys", "revoke"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("name the kid");
    const unknown = await cli(["keys", "revoke", "no-such-kid"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("NotFound");
  });

  it("works with workspaces by slug: create, list, get", async () => {
    const created = await cli(["workspaces", "create", "--name", "Acme", "--slug", "acme-cli"]);
    expect(created.code).toBe(0);
    const id = (JSON.parse(created.stdout) as { workspace: { id: string } }).workspace.id;
    const listed = JSON.parse((await cli(["workspaces", "list"])).stdout) as {
      workspaces: { id: string; slug: string }[];
    };
    expect(listed.workspaces.map((w) => w.slug)).toContain("acme-cli");
    const got = await cli(["workspaces", "get", "acme-cli"]);
    expect(got.code).toBe(0);
    expect((JSON.parse(got.stdout) as { workspace: { id: string } }).workspace.id).toBe(id);
    const missing = await cli(["workspaces", "get", "no-such-slug"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no workspace has the id or slug "no-such-slug"');
    expect(missing.stderr).toContain("keygate workspaces list");
  });

  it("reads and changes settings in the short spelling, and refuses unknown ones", async () => {
    await cli(["workspaces", "create", "--name", "Settings", "--slug", "settings-cli"]);
    const set = await cli([
      "settings",
      "set",
      "--workspace",
      "settings-cli",
      "otp_login=required",
      "password_min_length=12",
      'rate_limits={"login_ip":{"limit":20,"window_seconds":600}}',
    ]);
    expect(set.code).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({
      settings: {
        otpLogin: "OTP_LOGIN_MODE_REQUIRED",
        passwordMinLength: 12,
        rateLimits: { login_ip: { limit: 20, windowSeconds: 600 } },
      },
    });
    const got = JSON.parse((await cli(["settings", "get", "--workspace", "settings-cli"])).stdout);
    expect(got).toMatchObject({ otpLogin: "OTP_LOGIN_MODE_REQUIRED", passwordMinLength: 12 });
    // The default workspace is untouched.
    const other = JSON.parse(
      (await cli(["settings", "get", "--workspace", defaultSlug()])).stdout,
    ) as { otpLogin: string };
    expect(other.otpLogin).toBe("OTP_LOGIN_MODE_OFF");

    const reset = await cli([
      "settings",
      "set",
      "--workspace",
      "settings-cli",
      "--reset",
      "otp_login,rate_limits",
    ]);
    expect(JSON.parse(reset.stdout)).toMatchObject({
      settings: { otpLogin: "OTP_LOGIN_MODE_OFF", rateLimits: {} },
    });

    const which = await cli(["settings", "get"]);
    expect(which.code).toBe(2);
    expect(which.stderr).toContain("--workspace is required");

    const misspelt = await cli(["settings", "set", "requireEmailVerfication=true"]);
    expect(misspelt.code).toBe(2);
    expect(misspelt.stderr).toContain('"requireEmailVerfication" is not a workspace setting');
    const badValue = await cli(["settings", "set", "otp_login=always"]);
    expect(badValue.code).toBe(2);
    expect(badValue.stderr).toContain("otp_login is one of off, optional, required");
    const outOfRange = await cli([
      "settings",
      "set",
      "--workspace",
      "settings-cli",
      "password_min_length=3",
    ]);
    expect(outOfRange.code).toBe(1);
    expect(outOfRange.stderr).toContain("settings.password_min_length");
  });

  it("lists, finds, blocks and unblocks users by email", async () => {
    const email = "blockable@example.test";
    expect(
      (await cli(["provision-user", "--email", email, "--verified", "--workspace", defaultSlug()]))
        .code,
    ).toBe(0);
    const listed = JSON.parse(
      (await cli(["users", "list", "--email-prefix", "blockable@"])).stdout,
    ) as { users: { email: string }[] };
    expect(listed.users.map((u) => u.email)).toEqual([email]);
    const found = JSON.parse((await cli(["users", "find", email])).stdout) as {
      user: { id: string; blocked: boolean };
    };
    expect(found.user.blocked).toBe(false);

    const blocked = await cli(["users", "block", email, "--reason", "abuse report"]);
    expect(blocked.code).toBe(0);
    expect((JSON.parse(blocked.stdout) as { user: { blocked: boolean } }).user.blocked).toBe(true);
    const onlyBlocked = JSON.parse(
      (await cli(["users", "list", "--status", "blocked"])).stdout,
    ) as {
      users: { id: string }[];
    };
    expect(onlyBlocked.users.map((u) => u.id)).toEqual([found.user.id]);
    const byId = JSON.parse((await cli(["users", "find", found.user.id])).stdout) as {
      user: { blocked: boolean };
    };
    expect(byId.user.blocked).toBe(true);

    const unblocked = await cli(["users", "unblock", email]);
    expect((JSON.parse(unblocked.stdout) as { user: { blocked: boolean } }).user.blocked).toBe(
      false,
    );
    const nobody = await cli(["users", "find", "nobody@example.test"]);
    expect(nobody.code).toBe(2);
    expect(nobody.stderr).toContain("no user has the email address nobody@example.test");
  });

  it("adds, lists, changes and removes members of a workspace named by slug", async () => {
    await cli(["workspaces", "create", "--name", "Team", "--slug", "team-cli"]);
    const email = "member-cli@example.test";
    await cli(["provision-user", "--email", email, "--verified", "--workspace", defaultSlug()]);
    const added = await cli(["members", "add", email, "--workspace", "team-cli"]);
    expect(added.code).toBe(0);
    expect(JSON.parse(added.stdout)).toMatchObject({ membership: { role: "ROLE_MEMBER" } });
    const updated = await cli([
      "members",
      "update",
      email,
      "--workspace",
      "team-cli",
      "--role",
      "admin",
    ]);
    expect(JSON.parse(updated.stdout)).toMatchObject({ membership: { role: "ROLE_ADMIN" } });
    const listed = JSON.parse(
      (await cli(["members", "list", "--workspace", "team-cli"])).stdout,
    ) as {
      memberships: { role: string; user?: { email: string } }[];
    };
    expect(listed.memberships.map((m) => [m.user?.email, m.role])).toEqual([[email, "ROLE_ADMIN"]]);
    expect((await cli(["members", "remove", email, "--workspace", "team-cli"])).code).toBe(0);
    const after = JSON.parse(
      (await cli(["members", "list", "--workspace", "team-cli"])).stdout,
    ) as {
      memberships: unknown[];
    };
    expect(after.memberships).toEqual([]);
  });

  it("reads the audit log, filtered by type and user", async () => {
    const email = "audited@example.test";
    await cli(["provision-user", "--email", email, "--verified", "--workspace", defaultSlug()]);
    await cli(["users", "block", email]);
    const res = await cli(["audit", "--type", "user_blocked", "--user", email, "--limit", "10"]);
    expect(res.code).toBe(0);
    const events = (JSON.parse(res.stdout) as { events: { type: string }[] }).events;
    expect(events.map((e) => e.type)).toEqual(["user_blocked"]);
    const bad = await cli(["audit", "--limit", "5000"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--limit is a whole number from 1 to 1000");
  });

  it("helps without credentials, and names only commands that exist", async () => {
    const bare = { KEYGATE_ADMIN_KEY: "", KEYGATE_URL: "" };
    const top = await cli(["--help"], bare);
    expect(top.code).toBe(0);
    for (const command of [
      "workspaces list",
      "settings set",
      "users block",
      "members add",
      "audit",
    ])
      expect(top.stdout).toContain(`keygate ${command}`);
    const group = await cli(["admin-key", "--help"], bare);
    expect(group.code).toBe(0);
    expect(group.stdout).toContain("keygate admin-key create --name NAME");
    const one = await cli(["users", "block", "--help"], bare);
    expect(one.code).toBe(0);
    expect(one.stdout).toContain("keygate users block USER");

    const unknown = await cli(["users", "frob"], bare);
    expect(unknown.code).toBe(2);
    const named = /its commands are: (.*)/.exec(unknown.stderr)?.[1]?.split(", ") ?? [];
    expect(named).toEqual(["list", "find", "block", "unblock"]);
    for (const sub of named) {
      const help = await cli(["users", sub, "--help"], bare);
      expect([sub, help.code]).toEqual([sub, 0]);
    }
  });

  it("says which server it talks to when KEYGATE_URL is unset", async () => {
    const res = await cli(["keys", "list"], { KEYGATE_URL: "" });
    expect(res.stderr).toContain("KEYGATE_URL is not set: using http://127.0.0.1:8080");
    expect(res.code).not.toBe(0);
  });

  it("refuses without a key, and explains bad usage", async () => {
    expect((await cli(["keys", "list"], { KEYGATE_ADMIN_KEY: "" })).code).toBe(78);
    const bad = await cli(["admin-key", "create"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--name is required");
  });
});

describe("docs/cli.md", () => {
  it("shows every admin command, and only commands that exist", async () => {
    const doc = await readFile(path.resolve(import.meta.dirname, "../docs/cli.md"), "utf8");
    const blocks = [...doc.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] as string);
    const shown = new Set<string>();
    for (const line of blocks.join("\n").split("\n")) {
      const words = /^(?:npx )?keygate ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?/.exec(line);
      if (!words || words[1] === "serve" || words[1] === "migrate") continue;
      const group = adminCommandGroups[words[1] as string];
      expect(group, line).toBeDefined();
      const sub = group && "" in group ? "" : (words[2] ?? "");
      if (sub === "" && !(group && "" in group)) continue; // `keygate users --help`
      expect(group?.[sub], line).toBeDefined();
      shown.add(`${words[1]} ${sub}`.trim());
    }
    const all = Object.entries(adminCommandGroups).flatMap(([g, cs]) =>
      Object.keys(cs).map((c) => `${g} ${c}`.trim()),
    );
    expect([...shown].sort()).toEqual(all.sort());
  });
});
