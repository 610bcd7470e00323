import { createPublicKey, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  base64url,
  calculateJwkThumbprint,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import { createPool, type DatabasePool } from "slonik";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { ManualClock } from "../src/clock.js";
import { configFromEnv } from "../src/config.js";
import { type TokenInvalidCode, TokenInvalidError } from "../src/crypto/jwt.js";
import type { JwtAlgorithm } from "../src/crypto/jwt-keys.js";
import { decryptPrivateKey, KeyDecryptionError } from "../src/crypto/key-encryption.js";
import { loadMigrations, migrate } from "../src/db/migrate.js";
import { type Database, openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import { SigningKeys } from "../src/domain/signing-keys.js";
import { UnauthenticatedError } from "../src/errors.js";
import { createLogger } from "../src/log.js";
import { insertSigningKey, signingKeyRow } from "../src/repositories/signing-keys.js";
import { freshDatabaseUrl } from "./support/database.js";

const issuer = "https://keygate.test";
const audience = "keygate";
const logger = createLogger("silent");
const kek = randomBytes(32);
const algorithms: JwtAlgorithm[] = ["ES256", "EdDSA", "RS256"];

interface TestDatabase {
  database: Database;
  dataDir: string;
  drop(): Promise<void>;
}

async function openTestDatabase(): Promise<TestDatabase> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keygate-signing-keys-"));
  const fresh = await freshDatabaseUrl();
  const secret = randomBytes(32).toString("base64");
  const database = await openDatabase(
    configFromEnv({
      KEYGATE_DATA_DIR: dataDir,
      DATABASE_URL: fresh.url,
      KEYGATE_KEY_ENCRYPTION_KEY: secret,
      KEYGATE_TOKEN_SECRET: secret,
      KEYGATE_ISSUER: issuer,
      KEYGATE_MAIL_DEV_OUTBOX: "true",
    }),
  );
  await migrate(database.url, await loadMigrations());
  return { database, dataDir, drop: fresh.drop };
}

async function closeTestDatabase(t: TestDatabase | undefined): Promise<void> {
  await t?.database.close();
  await t?.drop();
  if (t) await rm(t.dataDir, { recursive: true, force: true });
}

/** Another instance: its own pool on the same database, counting the queries it sends. */
async function instancePool(url: string): Promise<{ pool: DatabasePool; queries(): number }> {
  let count = 0;
  const pool = await createPool(url, {
    maxPoolSize: 2,
    interceptors: [
      {
        name: "count-queries",
        beforeQueryExecution: () => {
          count++;
          return null;
        },
      },
    ],
  });
  return { pool, queries: () => count };
}

let main: TestDatabase;
const extraPools: DatabasePool[] = [];

beforeAll(async () => {
  main = await openTestDatabase();
});
afterAll(async () => {
  for (const pool of extraPools) await pool.end();
  await closeTestDatabase(main);
});

async function emptyKeyTable(): Promise<void> {
  await main.database.pool.query(sql.type(z.object({}))`DELETE FROM signing_keys`);
}

async function keyRows(pool: DatabasePool = main.database.pool) {
  return pool.any(sql.type(signingKeyRow)`
    SELECT kid, algorithm, public_jwk, private_key_encrypted, status, created_at, activated_at,
           retired_at, unpublish_after, revoked_at
    FROM signing_keys ORDER BY created_at`);
}

function open(
  algorithm: JwtAlgorithm,
  extra: { clock?: ManualClock; issuer?: string; audience?: string; pool?: DatabasePool } = {},
): Promise<SigningKeys> {
  return SigningKeys.open({
    pool: extra.pool ?? main.database.pool,
    keyEncryptionKey: kek,
    algorithm,
    issuer: extra.issuer ?? issuer,
    audience: extra.audience ?? audience,
    clock: extra.clock ?? new ManualClock(),
    logger,
  });
}

async function rejection(promise: Promise<unknown>): Promise<TokenInvalidError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TokenInvalidError);
  expect(error).toBeInstanceOf(UnauthenticatedError);
  expect((error as TokenInvalidError).reason).toBe("UNAUTHENTICATED");
  return error as TokenInvalidError;
}

async function expectRejected(
  keys: SigningKeys,
  token: string,
  code: TokenInvalidCode,
): Promise<void> {
  expect((await rejection(keys.verifyAccessToken(token))).code).toBe(code);
}

const subject = {
  userId: "8b0f6a52-4a8f-4a33-9d1a-3f5f6f0c1a01",
  workspaceId: "1c9b7a1e-5d6e-4f70-8a5b-2b1e7f6d9c02",
  sessionId: "f3a2d4c5-6b7e-4f81-9a0b-1c2d3e4f5a03",
  role: "admin" as const,
};

describe.each(algorithms)("%s access tokens", (algorithm) => {
  it("sign then verify round trip with every claim", async () => {
    await emptyKeyTable();
    const clock = new ManualClock(new Date("2030-01-01T00:00:00.250Z"));
    const keys = await open(algorithm, { clock });
    const signed = await keys.signAccessToken({
      ...subject,
      amr: ["pwd", "otp", "mfa"],
      acr: "2",
      ttlSeconds: 900,
    });

    const header = decodeProtectedHeader(signed.token);
    const [row] = await keyRows();
    expect(header).toEqual({ alg: algorithm, kid: row?.kid, typ: "at+jwt" });
    expect(row?.algorithm).toBe(algorithm);
    expect(row?.status).toBe("active");

    const iat = Math.floor(clock.now().getTime() / 1000);
    expect(decodeJwt(signed.token)).toEqual({
      iss: issuer,
      aud: audience,
      sub: subject.userId,
      workspace_id: subject.workspaceId,
      sid: subject.sessionId,
      role: "admin",
      jti: signed.jti,
      iat,
      exp: iat + 900,
      amr: ["pwd", "otp", "mfa"],
      acr: "2",
    });
    expect(signed.jti).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    expect(signed.issuedAt).toEqual(new Date(iat * 1000));
    expect(signed.expiresAt).toEqual(new Date((iat + 900) * 1000));

    expect(await keys.verifyAccessToken(signed.token)).toEqual({
      ...subject,
      jti: signed.jti,
      issuedAt: signed.issuedAt,
      expiresAt: signed.expiresAt,
      kid: row?.kid,
      amr: ["pwd", "otp", "mfa"],
      clientId: null,
      scopes: [],
      issuer,
      audience: [audience],
    });
    const second = await keys.signAccessToken({ ...subject, ttlSeconds: 900 });
    expect(second.jti).not.toBe(signed.jti);
  });

  it("SECURITY.md 27: jwks publishes kid, alg and use and no private member", async () => {
    await emptyKeyTable();
    const keys = await open(algorithm);
    const { keys: published } = await keys.jwks();
    const [row] = await keyRows();
    expect(published).toHaveLength(1);
    const jwk = published[0] as Record<string, unknown>;
    expect(jwk).toMatchObject({ kid: row?.kid, alg: algorithm, use: "sig" });
    for (const member of ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]) {
      expect(jwk).not.toHaveProperty(member);
      expect(row?.public_jwk).not.toHaveProperty(member);
    }
    expect(jwk.kty).toBe({ ES256: "EC", EdDSA: "OKP", RS256: "RSA" }[algorithm]);
    // The kid is the key's RFC 7638 thumbprint, and the published key is the one that signs.
    expect(await calculateJwkThumbprint(jwk as JWK)).toBe(row?.kid);
    const { token } = await keys.signAccessToken({ ...subject, ttlSeconds: 60 });
    const { jwtVerify } = await import("jose");
    await expect(
      jwtVerify(token, await importJWK(jwk as JWK, algorithm), { issuer, audience }),
    ).resolves.toBeTruthy();
  });
});

/** The active key's private JWK, decrypted the way only a holder of the KEK can. */
async function activePrivateJwk(): Promise<{ kid: string; jwk: JWK; sealed: Buffer }> {
  const row = (await keyRows()).find((r) => r.status === "active");
  if (!row) throw new Error("no active key");
  const jwk = JSON.parse(
    decryptPrivateKey(row.private_key_encrypted, kek, row.kid).toString("utf8"),
  ) as JWK;
  return { kid: row.kid, jwk, sealed: row.private_key_encrypted };
}

function unsigned(header: object, payload: object): string {
  const part = (o: object) => base64url.encode(JSON.stringify(o));
  return `${part(header)}.${part(payload)}.`;
}

describe("SECURITY.md 5: access token verification (ES256)", () => {
  let keys: SigningKeys;
  let clock: ManualClock;
  let kid: string;
  let realKey: CryptoKey;

  function claims(now = clock.now()): JWTPayload {
    const iat = Math.floor(now.getTime() / 1000);
    return {
      iss: issuer,
      aud: audience,
      sub: subject.userId,
      workspace_id: subject.workspaceId,
      sid: subject.sessionId,
      role: subject.role,
      jti: "4f1f3a52-0000-4000-8000-000000000000",
      iat,
      exp: iat + 600,
    };
  }

  /** Signed with the deployment's real private key: only the header or claims are wrong. */
  function signWithRealKey(payload: JWTPayload, header: Record<string, unknown> = {}) {
    return new SignJWT(payload)
      .setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt", ...header })
      .sign(realKey);
  }

  beforeAll(async () => {
    await emptyKeyTable();
    clock = new ManualClock(new Date("2030-06-01T12:00:00Z"));
    keys = await open("ES256", { clock });
    const active = await activePrivateJwk();
    kid = active.kid;
    realKey = (await importJWK(active.jwk, "ES256")) as CryptoKey;
  });

  it("a token the real key signs with the right header and claims passes (control)", async () => {
    const token = await signWithRealKey(claims());
    await expect(keys.verifyAccessToken(token)).resolves.toMatchObject({ kid });
  });

  it("rejects an expired token (clock moved past exp)", async () => {
    const { token } = await keys.signAccessToken({ ...subject, ttlSeconds: 60 });
    await expect(keys.verifyAccessToken(token)).resolves.toBeTruthy();
    const later = new ManualClock(clock.now());
    const laterKeys = await open("ES256", { clock: later });
    later.advance(60_000);
    await expectRejected(laterKeys, token, "ERR_JWT_EXPIRED");
  });

  it("rejects a wrong issuer and a wrong audience, even when the real key signed them", async () => {
    const otherIssuer = await open("ES256", { clock, issuer: "https://evil.test" });
    const a = await otherIssuer.signAccessToken({ ...subject, ttlSeconds: 60 });
    await expectRejected(keys, a.token, "ERR_JWT_CLAIM_INVALID");

    const otherAudience = await open("ES256", { clock, audience: "another-api" });
    const b = await otherAudience.signAccessToken({ ...subject, ttlSeconds: 60 });
    await expectRejected(keys, b.token, "ERR_JWT_CLAIM_INVALID");
  });

  it('rejects alg "none"', async () => {
    await expectRejected(
      keys,
      unsigned({ alg: "none", kid, typ: "at+jwt" }, claims()),
      "ERR_JWT_INVALID",
    );
    await expectRejected(keys, unsigned({ alg: "none" }, claims()), "ERR_JWT_INVALID");
  });

  it("rejects HS256 signed with the public key as the secret", async () => {
    const { keys: published } = await keys.jwks();
    const jwk = published[0] as JWK;
    const pem = createPublicKey({ key: jwk as never, format: "jwk" })
      .export({ type: "spki", format: "pem" })
      .toString();
    for (const secret of [pem, JSON.stringify(jwk)]) {
      const token = await new SignJWT(claims())
        .setProtectedHeader({ alg: "HS256", kid, typ: "at+jwt" })
        .sign(new TextEncoder().encode(secret));
      await expectRejected(keys, token, "ERR_JWT_INVALID");
    }
  });

  it("rejects keys offered by the token: jku, x5u, jwk and x5c headers", async () => {
    const attacker = await generateKeyPair("ES256", { extractable: true });
    const attackerJwk = await exportJWK(attacker.publicKey);
    const attackerKid = await calculateJwkThumbprint(attackerJwk);
    const offers: Record<string, unknown>[] = [
      { jku: "https://evil.test/jwks.json" },
      { x5u: "https://evil.test/cert.pem" },
      { jwk: attackerJwk },
      { x5c: ["MIIBszCCAVmgAwIBAgIUQ"] },
    ];
    for (const offer of offers) {
      for (const k of [kid, attackerKid]) {
        const token = await new SignJWT(claims())
          .setProtectedHeader({ alg: "ES256", kid: k, typ: "at+jwt", ...offer })
          .sign(attacker.privateKey);
        await expectRejected(keys, token, "ERR_JWT_INVALID");
      }
      // Even signed by the real key, a token carrying such a header is not accepted.
      await expectRejected(keys, await signWithRealKey(claims(), offer), "ERR_JWT_INVALID");
    }
  });

  it("rejects an unknown kid", async () => {
    const attacker = await generateKeyPair("ES256");
    const token = await new SignJWT(claims())
      .setProtectedHeader({ alg: "ES256", kid: "no-such-key", typ: "at+jwt" })
      .sign(attacker.privateKey);
    await expectRejected(keys, token, "ERR_JWT_UNKNOWN_KEY");
  });

  it("rejects a known kid with another algorithm or a foreign signature", async () => {
    const rsa = await generateKeyPair("RS256");
    const asRs256 = await new SignJWT(claims())
      .setProtectedHeader({ alg: "RS256", kid, typ: "at+jwt" })
      .sign(rsa.privateKey);
    await expectRejected(keys, asRs256, "ERR_JWT_INVALID");
    const ec = await generateKeyPair("ES256");
    const foreign = await new SignJWT(claims())
      .setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" })
      .sign(ec.privateKey);
    await expectRejected(keys, foreign, "ERR_JWT_INVALID");
  });

  it("rejects a tampered payload", async () => {
    const { token } = await keys.signAccessToken({ ...subject, role: "member", ttlSeconds: 60 });
    const [h, p, s] = token.split(".") as [string, string, string];
    const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p)));
    payload.role = "owner";
    const tampered = `${h}.${base64url.encode(JSON.stringify(payload))}.${s}`;
    await expectRejected(keys, tampered, "ERR_JWT_INVALID");
  });

  it("rejects a token missing any required claim, or with a malformed one", async () => {
    const required = ["workspace_id", "sub", "sid", "role", "jti", "iat", "exp", "iss", "aud"];
    for (const claim of required) {
      const payload = claims();
      delete payload[claim];
      await expectRejected(keys, await signWithRealKey(payload), "ERR_JWT_CLAIM_INVALID");
    }
    await expectRejected(
      keys,
      await signWithRealKey({ ...claims(), role: "superuser" }),
      "ERR_JWT_CLAIM_INVALID",
    );
    await expectRejected(
      keys,
      await signWithRealKey({ ...claims(), workspace_id: 42 }),
      "ERR_JWT_CLAIM_INVALID",
    );
  });

  it("SECURITY.md 6: rejects a token of another type (typ other than at+jwt)", async () => {
    for (const typ of ["JWT", "refresh+jwt", undefined]) {
      const header = { alg: "ES256", kid, ...(typ ? { typ } : {}) };
      const token = await new SignJWT(claims()).setProtectedHeader(header).sign(realKey);
      await expectRejected(keys, token, "ERR_JWT_INVALID");
    }
  });

  it("answers any malformed input with TokenInvalidError, never another exception", async () => {
    const inputs = [
      "",
      "abc",
      "a.b.c",
      "..",
      "eyJhbGciOiJFUzI1NiJ9..",
      `${base64url.encode("not json")}.e30.sig`,
      `${base64url.encode("[]")}.e30.sig`,
      `${base64url.encode("null")}.e30.sig`,
      unsigned({ alg: "ES256", kid, typ: "at+jwt" }, claims()),
      `${unsigned({ alg: "ES256", kid, typ: "at+jwt" }, claims())}${"A".repeat(86)}`,
      "x".repeat(100_000),
      `${(await signWithRealKey(claims())).split(".").slice(0, 2).join(".")}.!!!`,
      "a.b.c.d.e",
      null as unknown as string,
      42 as unknown as string,
    ];
    for (const input of inputs) {
      expect((await rejection(keys.verifyAccessToken(input))).code).toBe("ERR_JWT_INVALID");
    }
  });

  it("verification makes no database call; an unknown kid reloads at most once per second", async () => {
    const { pool, queries } = await instancePool(main.database.url);
    extraPools.push(pool);
    const instanceClock = new ManualClock(clock.now());
    const other = await open("ES256", { pool, clock: instanceClock });
    const { token } = await keys.signAccessToken({ ...subject, ttlSeconds: 600 });
    const before = queries();
    for (let i = 0; i < 20; i++) await other.verifyAccessToken(token);
    expect(queries()).toBe(before);

    const attacker = await generateKeyPair("ES256");
    const unknown = await new SignJWT(claims())
      .setProtectedHeader({ alg: "ES256", kid: "not-a-key", typ: "at+jwt" })
      .sign(attacker.privateKey);
    instanceClock.advance(1_000);
    await expectRejected(other, unknown, "ERR_JWT_UNKNOWN_KEY");
    const afterOne = queries();
    expect(afterOne).toBeGreaterThan(before);
    await Promise.all(
      Array.from({ length: 10 }, () => expectRejected(other, unknown, "ERR_JWT_UNKNOWN_KEY")),
    );
    expect(queries()).toBe(afterOne);
    instanceClock.advance(1_000);
    await expectRejected(other, unknown, "ERR_JWT_UNKNOWN_KEY");
    expect(queries()).toBeGreaterThan(afterOne);
  });
});

describe("SECURITY.md 27: keys at rest and across instances", () => {
  it("the private key is stored encrypted under the KEK, bound to its kid", async () => {
    await emptyKeyTable();
    await open("EdDSA");
    const { kid, jwk, sealed } = await activePrivateJwk();
    const d = jwk.d as string;
    expect(d.length).toBeGreaterThan(20);
    const [row] = await keyRows();
    expect(sealed.includes(Buffer.from(d, "utf8"))).toBe(false);
    expect(sealed.includes(Buffer.from(d, "base64url"))).toBe(false);
    expect(JSON.stringify(row?.public_jwk)).not.toContain(d);
    expect(sealed[0]).toBe(1);

    expect(() => decryptPrivateKey(sealed, randomBytes(32), kid)).toThrow(KeyDecryptionError);
    expect(() => decryptPrivateKey(sealed, kek, "another-kid")).toThrow(KeyDecryptionError);
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
    expect(() => decryptPrivateKey(flipped, kek, kid)).toThrow(KeyDecryptionError);

    await expect(
      SigningKeys.open({
        pool: main.database.pool,
        keyEncryptionKey: randomBytes(32),
        algorithm: "EdDSA",
        issuer,
        audience,
        logger,
      }),
    ).rejects.toThrow(KeyDecryptionError);
  });

  it("two instances opening together on a fresh database make exactly one key and trust each other", async () => {
    const fresh = await openTestDatabase();
    try {
      const a = await instancePool(fresh.database.url);
      const b = await instancePool(fresh.database.url);
      extraPools.push(a.pool, b.pool);
      const [first, second] = await Promise.all([
        open("ES256", { pool: a.pool }),
        open("ES256", { pool: b.pool }),
      ]);
      const rows = await keyRows(fresh.database.pool);
      expect(rows.map((r) => r.status)).toEqual(["active"]);

      const fromFirst = await first.signAccessToken({ ...subject, ttlSeconds: 60 });
      await expect(second.verifyAccessToken(fromFirst.token)).resolves.toMatchObject({
        jti: fromFirst.jti,
        kid: rows[0]?.kid,
      });
      const fromSecond = await second.signAccessToken({ ...subject, ttlSeconds: 60 });
      await expect(first.verifyAccessToken(fromSecond.token)).resolves.toMatchObject({
        jti: fromSecond.jti,
      });
    } finally {
      await closeTestDatabase(fresh);
    }
  });

  it("a key another instance publishes later is picked up on first sight of its kid", async () => {
    await emptyKeyTable();
    const clock = new ManualClock();
    const keys = await open("ES256", { clock });
    // Another instance publishes a next key (as rotation does) and, once active, signs with it.
    const { publicKey, privateKey } = await generateKeyPair("EdDSA", { extractable: true });
    const publicJwk = (await exportJWK(publicKey)) as Record<string, string>;
    const kid = await calculateJwkThumbprint(publicJwk);
    const { encryptPrivateKey } = await import("../src/crypto/key-encryption.js");
    await insertSigningKey(main.database.pool, {
      purpose: "access",
      kid,
      algorithm: "EdDSA",
      publicJwk,
      privateKeyEncrypted: encryptPrivateKey(
        Buffer.from(JSON.stringify(await exportJWK(privateKey))),
        kek,
        kid,
      ),
      status: "next",
      now: clock.now(),
    });
    const iat = Math.floor(clock.now().getTime() / 1000);
    const token = await new SignJWT({
      workspace_id: subject.workspaceId,
      sid: subject.sessionId,
      role: "member",
    })
      .setProtectedHeader({ alg: "EdDSA", kid, typ: "at+jwt" })
      .setIssuer(issuer)
      .setAudience(audience)
      .setSubject(subject.userId)
      .setJti("0b7b3c1e-1111-4111-8111-111111111111")
      .setIssuedAt(iat)
      .setExpirationTime(iat + 60)
      .sign(privateKey);
    clock.advance(1_000);
    await expect(keys.verifyAccessToken(token)).resolves.toMatchObject({ kid, role: "member" });
    const { keys: published } = await keys.jwks();
    expect(published.map((k) => (k as { kid: string }).kid)).toContain(kid);
  });
});
