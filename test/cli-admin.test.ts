import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], {
      env: {
        PATH: process.env.PATH ?? "",
        KEYGATE_URL: keygate.url,
        KEYGATE_ADMIN_KEY: keygate.bootstrapped?.adminKey ?? "",
        ...env,
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
    expect(again.created ?? false).toBe(false);
  });

  it("rotates the signing key: the new one is published as next", async () => {
    const rotated = await cli(["keys", "rotate"]);
    expect(rotated.code).toBe(0);
    const key = (JSON.parse(rotated.stdout) as { signingKey: { kid: string; status: string } })
      .signingKey;
    expect(key.status).toBe("SIGNING_KEY_STATUS_NEXT");
    expect((await cli(["keys", "list"])).stdout).toContain(key.kid);
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

  it("refuses without a key, and explains bad usage", async () => {
    expect((await cli(["keys", "list"], { KEYGATE_ADMIN_KEY: "" })).code).toBe(78);
    const bad = await cli(["admin-key", "create"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--name is required");
  });
});
