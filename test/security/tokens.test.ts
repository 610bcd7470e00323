import { createHash, createHmac, createPublicKey } from "node:crypto";
import { Writable } from "node:stream";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../../gen/keygate/v1/token_introspection_service_pb.js";
import { Role } from "../../gen/keygate/v1/types_pb.js";
import { sql } from "../../src/db/sql.js";
import { createLogger } from "../../src/log.js";
import { startTestKeygate, type TestKeygate } from "../support/server.js";

let keygate: TestKeygate;
let rootKey: string;
let workspaceId: string;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let introspection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;
let token: string;
let publicJwk: JWK;
const logLines: string[] = [];

const password = "correct horse battery staple";
const as = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
/** A segment's JSON object, or an empty one when an earlier mutation broke it. */
const unb64 = (s: string): Record<string, unknown> => {
  try {
    const v = JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
    return typeof v === "object" && v !== null ? v : {};
  } catch {
    return {};
  }
};

beforeAll(async () => {
  // Every log line at the most verbose level, to look for secrets in them (SECURITY.md 7).
  const destination = new Writable({
    write(chunk, _enc, done) {
      logLines.push(String(chunk));
      done();
    },
  });
  keygate = await startTestKeygate({}, { logger: createLogger("trace", destination) });
  rootKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  auth = createClient(AuthService, transport);
  introspection = createClient(TokenIntrospectionService, transport);
  const admin = createClient(AdminService, transport);
  await admin.provisionUser(
    { email: "jwt@example.test", password, workspaceId, role: Role.MEMBER },
    as(rootKey),
  );
  token = await login("jwt@example.test").then((t) => t.accessToken);
  const jwks = (await (await fetch(`${keygate.url}/.well-known/jwks.json`)).json()) as {
    keys: JWK[];
  };
  publicJwk = jwks.keys[0] as JWK;
});
afterAll(async () => {
  await keygate?.stop();
});

async function login(email: string) {
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error("no tokens");
  return res.result.value;
}

/** Introspection of a token: "active", "inactive", or the code it was refused with. */
async function outcome(t: string): Promise<string> {
  return introspection.introspect({ token: t }, as(rootKey)).then(
    (r) => (r.active ? "active" : "inactive"),
    (e) => Code[ConnectError.from(e).code] as string,
  );
}

type Parts = { header: string; payload: string; signature: string };
const split = (t: string): Parts => {
  const [header = "", payload = "", signature = ""] = t.split(".");
  return { header, payload, signature };
};
const join = (p: Parts) => `${p.header}.${p.payload}.${p.signature}`;

const anyJson = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.string(), fc.integer());
const headerKeys = ["alg", "kid", "typ", "jku", "x5u", "jwk", "crit", "b64", "cty", "x5c"];
const claimKeys = ["iss", "aud", "exp", "iat", "nbf", "jti", "sub", "workspace_id", "sid", "role"];

/** Changes to the header, the claims or the signature; none re-signs with Keygate's key. */
const mutation: fc.Arbitrary<(p: Parts) => Parts> = fc.oneof(
  fc.tuple(fc.constantFrom(...headerKeys), fc.option(anyJson)).map(([key, value]) => (p: Parts) => {
    const h = unb64(p.header);
    if (value === null) delete h[key];
    else h[key] = value;
    return { ...p, header: b64(h) };
  }),
  fc
    .constantFrom("none", "None", "HS256", "HS512", "RS512", "PS256", "ES256", "EdDSA", "")
    .map((alg) => (p: Parts) => ({ ...p, header: b64({ ...unb64(p.header), alg }) })),
  fc.tuple(fc.constantFrom(...claimKeys), fc.option(anyJson)).map(([key, value]) => (p: Parts) => {
    const c = unb64(p.payload);
    if (value === null) delete c[key];
    else c[key] = value;
    return { ...p, payload: b64(c) };
  }),
  fc.nat().map((bit) => (p: Parts) => {
    const sig = Buffer.from(p.signature, "base64url");
    const i = Math.floor(bit / 8) % sig.length;
    sig[i] = (sig[i] as number) ^ (1 << (bit % 8));
    return { ...p, signature: sig.toString("base64url") };
  }),
  fc
    .nat()
    .map((n) => (p: Parts) => ({ ...p, signature: p.signature.slice(0, n % p.signature.length) })),
  fc.uint8Array({ maxLength: 300 }).map((bytes) => (p: Parts) => ({
    ...p,
    signature: Buffer.from(bytes).toString("base64url"),
  })),
  fc.string({ maxLength: 8 }).map((s) => (p: Parts) => ({ ...p, payload: p.payload + s })),
);

describe("SECURITY.md 5: no mutation of a valid access token introspects active", {
  timeout: 180_000,
}, () => {
  it("the unmutated token is active", async () => {
    expect(await outcome(token)).toBe("active");
  });

  it("random changes to header, claims and signature never introspect active", async () => {
    const original = split(token);
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (changes) => {
        const mutated = join(changes.reduce((p, change) => change(p), original));
        fc.pre(mutated !== token);
        expect(["inactive", "InvalidArgument"], mutated).toContain(await outcome(mutated));
      }),
      { numRuns: 400 },
    );
  });

  it("tokens re-signed by an attacker are inactive: alg none, HS256 with the public key, foreign keys", async () => {
    const { header, payload } = split(token);
    const h = unb64(header);
    const claims = unb64(payload);
    const pem = createPublicKey({ key: publicJwk as never, format: "jwk" })
      .export({ type: "spki", format: "pem" })
      .toString();
    const hs256 = (secret: string | Buffer) => {
      const head = b64({ ...h, alg: "HS256" });
      const sig = createHmac("sha256", secret).update(`${head}.${payload}`).digest("base64url");
      return `${head}.${payload}.${sig}`;
    };
    const attacker = await generateKeyPair("RS256", { extractable: true });
    const attackerJwk = await exportJWK(attacker.publicKey);
    const signedBy = (headerExtra: Record<string, unknown>) =>
      new SignJWT(claims)
        .setProtectedHeader({
          alg: "RS256",
          typ: h.typ as string,
          kid: h.kid as string,
          ...headerExtra,
        })
        .sign(attacker.privateKey);
    const forged = [
      `${b64({ ...h, alg: "none" })}.${payload}.`,
      `${b64({ alg: "none", typ: "JWT" })}.${payload}.`,
      hs256(pem),
      hs256(JSON.stringify(publicJwk)),
      hs256(Buffer.from(publicJwk.n as string, "base64url")),
      await signedBy({}),
      await signedBy({ jwk: attackerJwk }),
      await signedBy({ jku: "https://attacker.example/jwks.json", kid: "attacker" }),
      await signedBy({ x5u: "https://attacker.example/cert.pem" }),
    ];
    for (const t of forged) expect(await outcome(t), t).toBe("inactive");
  });
});

describe("SECURITY.md 7: refresh tokens are 256 random bits, stored as keyed hashes, never logged", {
  timeout: 120_000,
}, () => {
  it("have 256 bits of base64url after their prefix, and differ every time", async () => {
    const tokens = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const t = (await login("jwt@example.test")).refreshToken;
      expect(t).toMatch(/^kgr_[A-Za-z0-9_-]{43}$/);
      expect(Buffer.from(t.slice(4), "base64url")).toHaveLength(32);
      tokens.add(t);
    }
    expect(tokens.size).toBe(8);
  });

  it("neither the token nor an unkeyed hash of it is stored, logged or in the audit log", async () => {
    const first = await login("jwt@example.test");
    const refreshed = await auth.refresh({ refreshToken: first.refreshToken });
    const secrets = [first.refreshToken, refreshed.tokens?.refreshToken as string];
    expect(secrets[1]).toMatch(/^kgr_/);
    const rows = z.object({ row: z.string() });
    const stored = await keygate.database.pool.anyFirst(sql.type(rows)`
      SELECT row_to_json(t)::text AS row FROM refresh_tokens t
      UNION ALL SELECT row_to_json(s)::text FROM sessions s
      UNION ALL SELECT row_to_json(a)::text FROM audit_events a`);
    const everything = [stored.join("\n"), logLines.join("")].join("\n");
    expect(logLines.length).toBeGreaterThan(0);
    expect(stored.length).toBeGreaterThan(0);
    for (const secret of secrets) {
      const body = secret.slice(4);
      const sha = createHash("sha256").update(secret).digest();
      for (const form of [secret, body, sha.toString("hex"), sha.toString("base64")]) {
        expect(everything.includes(form), form).toBe(false);
      }
    }
  });
});
