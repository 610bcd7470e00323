/**
 * Which JWT algorithm Keygate should sign access tokens with by default: signs and verifies
 * per second for ES256 (P-256), EdDSA (Ed25519) and RS256 (2048-bit), with jose and the same
 * key handling, header and claims as src/crypto/jwt.ts and jwt-keys.ts (keys imported from JWKs,
 * non-extractable private key, typ at+jwt, iss/aud/exp checked against a given date).
 *
 * A token is signed once per login or refresh but verified at every gateway call, so the
 * recommendation weighs verification by how many calls a token serves.
 *
 * jose signs and verifies through WebCrypto, whose every call is a job on libuv's thread pool:
 * one at a time, that hop dominates and hides the algorithms' cost, so the figures that decide
 * are the ones with many operations in flight (the machine's capacity), next to node:crypto's
 * synchronous rates on the same key types (OpenSSL's bare cost, which gateways in native code
 * pay too).
 *
 *   npm run bench -- jwt-alg [ms per measurement=1500] [rounds=3] [verifies per token=100]
 *     [concurrency=16]
 */
import {
  sign as cryptoSign,
  verify as cryptoVerify,
  generateKeyPairSync,
  randomUUID,
} from "node:crypto";
import {
  type CryptoKey,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  jwtVerify,
  SignJWT,
} from "jose";

type Algorithm = "ES256" | "EdDSA" | "RS256";
const algorithms: readonly Algorithm[] = ["ES256", "EdDSA", "RS256"];
const issuer = "https://keygate.bench";
const audience = "keygate";
const now = new Date("2030-01-01T00:00:00Z");

interface Keys {
  signKey: CryptoKey;
  verifyKey: CryptoKey;
  kid: string;
}

async function keysFor(alg: Algorithm): Promise<Keys> {
  const pair = await generateKeyPair(alg, { extractable: true });
  // As SigningKeys does: the private key goes through its JWK form and comes back
  // non-extractable, the public key is imported from the published JWK.
  const privateJwk = (await exportJWK(pair.privateKey)) as JWK;
  const publicJwk = (await exportJWK(pair.publicKey)) as JWK;
  return {
    signKey: (await importJWK(privateJwk, alg, { extractable: false })) as CryptoKey,
    verifyKey: (await importJWK(publicJwk, alg)) as CryptoKey,
    kid: `bench-${alg}`,
  };
}

function sign(alg: Algorithm, keys: Keys): Promise<string> {
  const iat = Math.floor(now.getTime() / 1000);
  return new SignJWT({
    workspace_id: "1c9b7a1e-5d6e-4f70-8a5b-2b1e7f6d9c02",
    sid: "f3a2d4c5-6b7e-4f81-9a0b-1c2d3e4f5a03",
    role: "member",
  })
    .setProtectedHeader({ alg, kid: keys.kid, typ: "at+jwt" })
    .setIssuer(issuer)
    .setAudience(audience)
    .setSubject("8b0f6a52-4a8f-4a33-9d1a-3f5f6f0c1a01")
    .setJti(randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + 900)
    .sign(keys.signKey);
}

async function verify(alg: Algorithm, keys: Keys, token: string): Promise<void> {
  await jwtVerify(token, keys.verifyKey, {
    algorithms: [alg],
    issuer,
    audience,
    typ: "at+jwt",
    currentDate: now,
  });
}

/** Operations per second of `op`, with `concurrency` in flight, for about `ms`. */
async function rate(op: () => Promise<unknown>, ms: number, concurrency: number): Promise<number> {
  for (let i = 0; i < 50; i++) await op(); // warm-up
  let done = 0;
  const started = performance.now();
  const deadline = started + ms;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        await op();
        done++;
      }
    }),
  );
  return done / ((performance.now() - started) / 1000);
}

interface Row {
  /** Throughput with `concurrency` operations in flight: what the machine can do. */
  signPerSecond: number;
  verifyPerSecond: number;
  /** One operation at a time: dominated by the hop to libuv's thread pool and back. */
  signPerSecondSerial: number;
  verifyPerSecondSerial: number;
  /** node:crypto synchronously on the same key types: the bare OpenSSL cost. */
  rawSignPerSecond: number;
  rawVerifyPerSecond: number;
  tokenBytes: number;
}

const rawInput = Buffer.alloc(400, 0x61); // about a token's signing input

function rawPair(alg: Algorithm) {
  if (alg === "ES256") return generateKeyPairSync("ec", { namedCurve: "P-256" });
  if (alg === "EdDSA") return generateKeyPairSync("ed25519");
  return generateKeyPairSync("rsa", { modulusLength: 2048 });
}

/** Synchronous operations per second of `op` for about `ms`. */
function rawRate(op: () => unknown, ms: number): number {
  for (let i = 0; i < 50; i++) op();
  let done = 0;
  const started = performance.now();
  while (performance.now() - started < ms) {
    op();
    done++;
  }
  return done / ((performance.now() - started) / 1000);
}

/** Beyond how many verifies per token `best` costs less than `other`, when it signs slower. */
function breakEven(best: Row, other: Row, name: string): string {
  const extraSign = 1 / best.signPerSecond - 1 / other.signPerSecond;
  const savedPerVerify = 1 / other.verifyPerSecond - 1 / best.verifyPerSecond;
  if (extraSign <= 0 || savedPerVerify <= 0) return "";
  return ` (break-even with ${name} at ${(extraSign / savedPerVerify).toFixed(1)} verifies per token)`;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const ms = Number(args[0] ?? 1_500);
  const rounds = Number(args[1] ?? 3);
  const verifiesPerToken = Number(args[2] ?? 100);
  const concurrency = Number(args[3] ?? 16);

  const keys = new Map<Algorithm, Keys>();
  const tokens = new Map<Algorithm, string>();
  for (const alg of algorithms) {
    const k = await keysFor(alg);
    keys.set(alg, k);
    const token = await sign(alg, k);
    await verify(alg, k, token); // the pair really works before it is timed
    tokens.set(alg, token);
  }

  const samples = new Map<Algorithm, Row[]>(algorithms.map((a) => [a, []]));
  for (let r = 0; r < rounds; r++) {
    // Rotate the order each round so drift in the machine's load hits every algorithm alike.
    const order = algorithms.map((_, i) => algorithms[(i + r) % algorithms.length] as Algorithm);
    for (const alg of order) {
      const k = keys.get(alg) as Keys;
      const token = tokens.get(alg) as string;
      const digest = alg === "EdDSA" ? null : "sha256";
      const pair = rawPair(alg);
      const signature = cryptoSign(digest, rawInput, pair.privateKey);
      samples.get(alg)?.push({
        signPerSecond: await rate(() => sign(alg, k), ms, concurrency),
        verifyPerSecond: await rate(() => verify(alg, k, token), ms, concurrency),
        signPerSecondSerial: await rate(() => sign(alg, k), ms, 1),
        verifyPerSecondSerial: await rate(() => verify(alg, k, token), ms, 1),
        rawSignPerSecond: rawRate(() => cryptoSign(digest, rawInput, pair.privateKey), ms),
        rawVerifyPerSecond: rawRate(
          () => cryptoVerify(digest, rawInput, pair.publicKey, signature),
          ms,
        ),
        tokenBytes: token.length,
      });
    }
  }

  const results = {} as Record<Algorithm, Row & { microsecondsPerToken: number }>;
  for (const alg of algorithms) {
    const rows = samples.get(alg) as Row[];
    const pick = (f: keyof Row) => Math.round(median(rows.map((x) => x[f])));
    const row: Row = {
      signPerSecond: pick("signPerSecond"),
      verifyPerSecond: pick("verifyPerSecond"),
      signPerSecondSerial: pick("signPerSecondSerial"),
      verifyPerSecondSerial: pick("verifyPerSecondSerial"),
      rawSignPerSecond: pick("rawSignPerSecond"),
      rawVerifyPerSecond: pick("rawVerifyPerSecond"),
      tokenBytes: pick("tokenBytes"),
    };
    // Machine time one token costs over its life, one sign plus `verifiesPerToken` verifies,
    // from the throughput figures: under load, capacity is what runs out.
    const microsecondsPerToken =
      1e6 / row.signPerSecond + (1e6 * verifiesPerToken) / row.verifyPerSecond;
    results[alg] = { ...row, microsecondsPerToken: Math.round(microsecondsPerToken) };
  }

  const byCost = [...algorithms].sort(
    (a, b) => results[a].microsecondsPerToken - results[b].microsecondsPerToken,
  );
  const best = byCost[0] as Algorithm;
  const fastestVerify = [...algorithms].sort(
    (a, b) => results[b].verifyPerSecond - results[a].verifyPerSecond,
  )[0] as Algorithm;
  const ratio = (a: number, b: number) => Number((a / b).toFixed(2));
  const ratios: Record<string, Record<string, number>> = {};
  for (const alg of algorithms) {
    const r = results[alg];
    const b = results[best];
    ratios[alg] = {
      [`verify/s vs ${best}`]: ratio(r.verifyPerSecond, b.verifyPerSecond),
      [`sign/s vs ${best}`]: ratio(r.signPerSecond, b.signPerSecond),
      [`raw verify/s vs ${best}`]: ratio(r.rawVerifyPerSecond, b.rawVerifyPerSecond),
      [`cost per token vs ${best}`]: ratio(r.microsecondsPerToken, b.microsecondsPerToken),
    };
  }

  const label = { ES256: "ES256 (P-256)", EdDSA: "EdDSA (Ed25519)", RS256: "RS256 (2048)" };
  console.log(
    `\njwt-alg: jose, ${ms} ms per measurement x ${rounds} rounds, medians; sign/s and verify/s ` +
      `with ${concurrency} in flight, "serial" one at a time, "raw" node:crypto sync on one core; ` +
      `cost per token = 1 sign + ${verifiesPerToken} verifies at the in-flight rates`,
  );
  console.table(
    Object.fromEntries(
      algorithms.map((a) => {
        const r = results[a];
        return [
          label[a],
          {
            "sign/s": r.signPerSecond,
            "verify/s": r.verifyPerSecond,
            "sign/s serial": r.signPerSecondSerial,
            "verify/s serial": r.verifyPerSecondSerial,
            "raw sign/s": r.rawSignPerSecond,
            "raw verify/s": r.rawVerifyPerSecond,
            "token bytes": r.tokenBytes,
            "µs per token": r.microsecondsPerToken,
          },
        ];
      }),
    ),
  );
  console.table(ratios);
  console.log(
    `recommended default: ${best} (lowest cost per token at ${verifiesPerToken} verifies per sign; ` +
      `fastest verification: ${fastestVerify})`,
  );
  for (const alg of byCost.slice(1)) {
    const r = results[alg];
    const b = results[best];
    console.log(
      `  ${best} verifies ${(b.verifyPerSecond / r.verifyPerSecond).toFixed(2)}x as fast as ${alg} ` +
        `(raw ${(b.rawVerifyPerSecond / r.rawVerifyPerSecond).toFixed(2)}x) and signs ` +
        `${(b.signPerSecond / r.signPerSecond).toFixed(2)}x as fast; a token costs ` +
        `${(r.microsecondsPerToken / b.microsecondsPerToken).toFixed(2)}x as much with ${alg}` +
        breakEven(b, r, alg),
    );
  }
  return {
    ms,
    rounds,
    verifiesPerToken,
    concurrency,
    results,
    ratios,
    recommended: best,
    fastestVerify,
  };
}
