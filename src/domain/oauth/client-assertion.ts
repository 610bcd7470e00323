import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JWK,
  jwtVerify,
} from "jose";
import { withTenant } from "../../db/with-tenant.js";
import { recordClientAssertion } from "../../repositories/oauth-client-assertions.js";
import type { OAuthClientRow } from "../../repositories/oauth-clients.js";
import type { AuthDeps } from "../deps.js";
import { OAuthProtocolError } from "./errors.js";

/**
 * private_key_jwt (RFC 7523 section 2.2 and 3, OpenID Connect Core 9): the client proves
 * itself with a JWT signed by a key of the JWK Set it registered.
 */

export const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/** Asymmetric only: an HS* assertion would need a shared secret, which such a client has not. */
export const assertionAlgorithms = ["RS256", "ES256", "EdDSA"] as const;
/** How far ahead an assertion may expire: it is a one-off proof, not a credential to keep. */
export const maxAssertionLifetimeSeconds = 300;

const maxKeys = 10;
const maxJwksLength = 20_000;
const maxAssertionLength = 8192;
/** Members that only a private or symmetric key has. */
const privateMembers = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const algorithmOf: Record<string, (typeof assertionAlgorithms)[number]> = {
  RSA: "RS256",
  EC: "ES256",
  OKP: "EdDSA",
};

/**
 * The JWK Set as stored (public members only), or why it is refused: 1 to 10 signing keys,
 * RSA of at least 2048 bits, EC P-256 or Ed25519, no private or symmetric key, a distinct
 * `kid` on each when there are several (an assertion names its key by kid).
 */
export async function parseClientJwks(
  text: string,
): Promise<{ jwks: { keys: Record<string, string>[] } } | { problem: string }> {
  if (text.length > maxJwksLength) return { problem: `is longer than ${maxJwksLength} characters` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { problem: "is not JSON" };
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (typeof parsed !== "object" || parsed === null || !Array.isArray(keys)) {
    return { problem: 'must be a JWK Set: {"keys": [...]}' };
  }
  if (keys.length < 1 || keys.length > maxKeys) {
    return { problem: `must hold 1 to ${maxKeys} keys` };
  }
  const out: Record<string, string>[] = [];
  const kids = new Set<string>();
  for (const [i, key] of keys.entries()) {
    const problem = await keyProblem(key);
    if (problem !== null) return { problem: `keys[${i}] ${problem}` };
    const jwk = key as Record<string, string>;
    if (keys.length > 1) {
      if (jwk.kid === undefined) return { problem: `keys[${i}] needs a kid (there are several)` };
      if (kids.has(jwk.kid)) return { problem: `keys[${i}] has the kid of another key` };
    }
    if (jwk.kid !== undefined) kids.add(jwk.kid);
    const members = ["kty", "crv", "n", "e", "x", "y", "kid", "alg", "use"];
    out.push(
      Object.fromEntries(
        members.filter((m) => jwk[m] !== undefined).map((m) => [m, jwk[m] as string]),
      ),
    );
  }
  return { jwks: { keys: out } };
}

async function keyProblem(key: unknown): Promise<string | null> {
  if (typeof key !== "object" || key === null || Array.isArray(key)) return "is not a JWK";
  const jwk = key as Record<string, unknown>;
  for (const member of privateMembers) {
    if (member in jwk) return "is a private or symmetric key: register the public key only";
  }
  for (const member of ["kty", "crv", "n", "e", "x", "y", "kid", "alg", "use"]) {
    if (jwk[member] !== undefined && typeof jwk[member] !== "string") {
      return `has a non-string "${member}"`;
    }
  }
  const alg = algorithmOf[String(jwk.kty)];
  if (alg === undefined) return "must be an RSA, EC or OKP key";
  if (jwk.kty === "EC" && jwk.crv !== "P-256") return "must be on P-256 (ES256)";
  if (jwk.kty === "OKP" && jwk.crv !== "Ed25519") return "must be Ed25519 (EdDSA)";
  if (jwk.kty === "RSA" && Buffer.from(String(jwk.n ?? ""), "base64url").length < 256) {
    return "must have a modulus of at least 2048 bits";
  }
  if (jwk.alg !== undefined && jwk.alg !== alg) return `must be for ${alg}`;
  if (jwk.use !== undefined && jwk.use !== "sig") return 'must be for signing (use "sig")';
  if (jwk.key_ops !== undefined) {
    if (!Array.isArray(jwk.key_ops) || !jwk.key_ops.includes("verify")) {
      return 'must allow "verify" in key_ops';
    }
  }
  if (typeof jwk.kid === "string" && (jwk.kid.length === 0 || jwk.kid.length > 100)) {
    return "has a kid of 1 to 100 characters";
  }
  try {
    await importJWK({ ...(jwk as JWK), alg: undefined }, alg);
  } catch {
    return "is not a valid public key";
  }
  return null;
}

const invalidClient = (description: string) =>
  new OAuthProtocolError("invalid_client", description, 401);

/**
 * Checks a client assertion: signed by one of the client's keys with an accepted algorithm,
 * iss = sub = the client, aud the token endpoint or the issuer, exp at most 5 minutes ahead,
 * and a jti not seen before (recorded until its exp, so a replay fails on every instance).
 */
export async function verifyClientAssertion(
  deps: Pick<AuthDeps, "pool" | "clock">,
  client: OAuthClientRow,
  assertion: string,
  audiences: { issuer: string; tokenEndpoint: string },
): Promise<void> {
  if (client.jwks === null) throw invalidClient("this client has no keys");
  if (assertion.length === 0 || assertion.length > maxAssertionLength) {
    throw invalidClient("the client assertion is malformed");
  }
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(assertion);
  } catch {
    throw invalidClient("the client assertion is malformed");
  }
  // The key is always one the client registered: a header naming another (jwk, jku, x5u,
  // x5c) is refused rather than ignored, so nobody relies on it being honoured.
  const named = Object.keys(header).filter((m) => !assertionHeaderMembers.has(m));
  if (named.length > 0) {
    throw invalidClient(`the client assertion's header may not carry ${named.join(", ")}`);
  }
  const alg = header.alg;
  if (!(assertionAlgorithms as readonly unknown[]).includes(alg)) {
    throw invalidClient(
      `the client assertion must be signed with ${assertionAlgorithms.join(", ")}`,
    );
  }
  const now = deps.clock.now();
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(assertion, createLocalJWKSet(client.jwks as { keys: JWK[] }), {
      algorithms: [...assertionAlgorithms],
      issuer: client.client_id,
      subject: client.client_id,
      audience: [audiences.tokenEndpoint, audiences.issuer],
      currentDate: now,
      requiredClaims: ["iss", "sub", "aud", "exp", "jti"],
    }));
  } catch (error) {
    throw invalidClient(assertionRefusal(error));
  }
  const exp = payload.exp as number;
  const nowSeconds = Math.floor(now.getTime() / 1000);
  if (typeof payload.iat === "number" && payload.iat > nowSeconds + assertionClockSkewSeconds) {
    throw invalidClient("the client assertion is issued in the future");
  }
  if (exp - nowSeconds > maxAssertionLifetimeSeconds) {
    throw invalidClient(
      `the client assertion must expire within ${maxAssertionLifetimeSeconds} seconds`,
    );
  }
  const jti = payload.jti;
  if (typeof jti !== "string" || jti.length === 0 || jti.length > 200) {
    throw invalidClient("the client assertion's jti must be 1 to 200 characters");
  }
  const fresh = await withTenant(deps.pool, client.workspace_id, (tx) =>
    recordClientAssertion(tx, {
      workspaceId: client.workspace_id,
      clientId: client.client_id,
      jti,
      expiresAt: new Date(exp * 1000),
      now,
    }),
  );
  if (!fresh) throw invalidClient("the client assertion was used already");
}

const assertionHeaderMembers = new Set(["alg", "kid", "typ"]);
/** How far ahead of Keygate's clock a client's clock may run. */
const assertionClockSkewSeconds = 60;

/** Why jose refused an assertion, for the client's developer; never the assertion itself. */
function assertionRefusal(error: unknown): string {
  if (error instanceof errors.JWTExpired) return "the client assertion has expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    return `the client assertion's "${error.claim}" claim is wrong`;
  }
  if (
    error instanceof errors.JWKSNoMatchingKey ||
    error instanceof errors.JWSSignatureVerificationFailed
  ) {
    return "the client assertion is not signed by a key the client registered";
  }
  return "the client assertion is invalid";
}
