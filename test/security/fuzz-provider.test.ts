import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeygateClient } from "../../src/client/index.js";
import { freePort } from "../support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "../support/server.js";

// SECURITY.md 22 for the OpenID Provider's plain-HTTP endpoints: random query strings, forms,
// methods, cookies and authorization headers, with the real workspace and client mixed in so
// the input reaches past the first checks. Every answer is deliberate: below 500, no stack.

let keygate: TestKeygate;
let workspaceId: string;
let clientId: string;
let secret: string;
const maxRequestBytes = 4096;

beforeAll(async () => {
  const port = await freePort();
  keygate = await startTestKeygate({
    KEYGATE_PORT: String(port),
    KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
    KEYGATE_MAX_REQUEST_BYTES: String(maxRequestBytes),
  });
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const admin = createKeygateClient({
    baseUrl: keygate.url,
    transport: "connect",
    adminKey: keygate.bootstrapped?.adminKey as string,
  });
  const created = await admin.admin.createOAuthClient({
    workspaceId,
    name: "Fuzzed",
    redirectUris: ["http://127.0.0.1:9/cb"],
    postLogoutRedirectUris: ["http://127.0.0.1:9/out"],
    confidential: true,
    firstParty: true,
  });
  clientId = created.client?.clientId as string;
  secret = created.clientSecret;
});
afterAll(async () => {
  await keygate?.stop();
});

const paths = [
  "/.well-known/openid-configuration",
  "/oauth2/authorize",
  "/oauth2/authorize/resume",
  "/oauth2/token",
  "/oauth2/userinfo",
  "/oauth2/end_session",
];
const names = [
  "client_id",
  "redirect_uri",
  "response_type",
  "scope",
  "state",
  "nonce",
  "code_challenge",
  "code_challenge_method",
  "prompt",
  "max_age",
  "login_hint",
  "response_mode",
  "request",
  "request_uri",
  "grant_type",
  "code",
  "code_verifier",
  "refresh_token",
  "client_secret",
  "id_token_hint",
  "post_logout_redirect_uri",
  "confirm",
  "resource",
];

/** Values that are sometimes right, often nearly right, and otherwise anything at all. */
const value = () =>
  fc.oneof(
    fc.constantFrom(
      clientId,
      secret,
      "http://127.0.0.1:9/cb",
      "http://127.0.0.1:9/out",
      "code",
      "S256",
      "plain",
      "openid email",
      "none",
      "login consent",
      "authorization_code",
      "refresh_token",
      "client_credentials",
      "https://api.example.test/v1",
      "http://127.0.0.1:9",
      "yes",
      "0",
      "-1",
      "99999999999",
      "kgac_" + "A".repeat(43),
      "kgr_" + "A".repeat(43),
      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
      "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
      "00000000-0000-4000-8000-000000000000",
      "a\u0000b",
    ),
    fc.string({ maxLength: 80 }),
    fc.string({ unit: "binary", maxLength: 40 }),
  );
const params = fc.array(fc.tuple(fc.constantFrom(...names), value()), { maxLength: 12 });
const workspace = () =>
  fc.oneof(
    fc.constant(null).map(() => workspaceId),
    fc.constant("00000000-0000-4000-8000-000000000000"),
    fc.constant(null).map(() => workspaceId.toUpperCase()),
    // Shaped like an id but not one: it must never reach a uuid column.
    fc.constant("------------------------------------"),
    fc.constant("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"),
  );

describe("SECURITY.md 22: the OpenID Provider's endpoints answer any input deliberately", () => {
  it("random requests to every endpoint: status below 500, no stack in the body", async () => {
    await fc.assert(
      fc.asyncProperty(
        workspace(),
        fc.constantFrom(...paths),
        fc.constantFrom("GET", "POST", "PUT", "DELETE", "HEAD"),
        params,
        fc.option(
          fc.oneof(
            fc
              .constant(null)
              .map(() => `Basic ${Buffer.from(`${clientId}:${secret}`).toString("base64")}`),
            fc.string({ maxLength: 60 }).map((s) => `Basic ${Buffer.from(s).toString("base64")}`),
            fc.string({ maxLength: 60 }).map((s) => `Bearer ${s.replace(/[^\x21-\x7e]/g, "x")}`),
          ),
        ),
        fc.option(fc.string({ maxLength: 120 }).map((s) => s.replace(/[^\x20-\x7e]/g, "x"))),
        async (ws, path, method, pairs, authorization, cookie) => {
          const query = new URLSearchParams(pairs).toString();
          const body = method === "POST" ? query : undefined;
          const url = `${keygate.url}/w/${ws}${path}${method === "POST" ? "" : `?${query}`}`;
          const headers: Record<string, string> = {};
          if (body !== undefined) headers["content-type"] = "application/x-www-form-urlencoded";
          if (authorization) headers.authorization = authorization;
          if (cookie) headers.cookie = cookie;
          const res = await fetch(url, { method, headers, body, redirect: "manual" });
          const text = await res.text();
          expect(res.status, `${method} ${path} ${query}`).toBeLessThan(500);
          expect(text).not.toMatch(/\bat .+\.(ts|js):\d+/);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("an oversized form is refused with 413, and the server is still ready", async () => {
    const res = await fetch(`${keygate.url}/w/${workspaceId}/oauth2/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: `grant_type=authorization_code&code=${"a".repeat(maxRequestBytes * 2)}`,
    });
    expect(res.status).toBe(413);
    expect((await fetch(`${keygate.url}/readyz`)).status).toBe(200);
  });
});
