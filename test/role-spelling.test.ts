import { readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createVerifier } from "../src/verify/index.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

// One spelling of a role per surface, as the "Roles" convention of docs/api.md says: the enum's
// names in AuthService and AdminService messages, the token claim's in what describes a token.

let keygate: TestKeygate;
let workspaceId: string;
let adminKey: string;

beforeAll(async () => {
  keygate = await startTestKeygate();
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  adminKey = keygate.bootstrapped?.adminKey as string;
});
afterAll(async () => {
  await keygate?.stop();
});

async function call(service: string, method: string, body: unknown, headers = {}) {
  const res = await fetch(`${keygate.url}/keygate.v1.${service}/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-workspace-id": workspaceId, ...headers },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

describe("role spelling", () => {
  it("is the enum's name in messages and the claim's in what describes a token, as documented", async () => {
    const doc = await readFile(path.resolve(import.meta.dirname, "../docs/api.md"), "utf8");
    const convention = /- \*\*Roles\.\*\*([\s\S]*?)\n- /.exec(doc)?.[1] ?? "";
    expect(convention).toContain("`ROLE_MEMBER`");
    expect(convention).toContain("`member`");

    const email = `roles-${Date.now()}@example.test`;
    const password = "correct horse battery staple";
    await call("AuthService", "SignUp", { email, password });
    const login = await call("AuthService", "Login", { email, password });
    const token = (login.tokens as { accessToken: string; role: string }).accessToken;
    expect((login.tokens as { role: string }).role).toBe("ROLE_MEMBER");

    const session = await call(
      "AuthService",
      "GetSession",
      {},
      { authorization: `Bearer ${token}` },
    );
    expect(session.role).toBe("ROLE_MEMBER");
    const members = await call(
      "AdminService",
      "ListMembers",
      { workspaceId },
      { authorization: `Bearer ${adminKey}` },
    );
    expect((members.memberships as { role: string }[]).map((m) => m.role)).toContain("ROLE_MEMBER");

    const introspected = await call(
      "TokenIntrospectionService",
      "Introspect",
      { token },
      { authorization: `Bearer ${adminKey}` },
    );
    expect(introspected.role).toBe("member");
    const oauth = await fetch(`${keygate.url}/oauth2/introspect`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Bearer ${adminKey}`,
      },
      body: new URLSearchParams({ token }),
    });
    expect(((await oauth.json()) as { role: string }).role).toBe("member");
    const verifier = createVerifier({
      baseUrl: keygate.url,
      adminKey,
      audience: keygate.config.audience,
      issuer: keygate.config.issuer,
      transport: "connect",
    });
    try {
      await verifier.ready();
      expect((await verifier.verify(token)).role).toBe("member");
    } finally {
      await verifier.close();
    }
  });
});
