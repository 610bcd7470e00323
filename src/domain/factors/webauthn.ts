import { createPublicKey, type JsonWebKey, randomFillSync, timingSafeEqual } from "node:crypto";
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from "@simplewebauthn/server";
import { cose, decodeCredentialPublicKey } from "@simplewebauthn/server/helpers";
import type { DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { hmacSha256 } from "../../crypto/opaque-tokens.js";
import { InvalidArgumentError, UnauthenticatedError } from "../../errors.js";
import {
  type ChallengePurpose,
  type SpentChallenge,
  spendPasskeyChallenge,
  type UserVerification,
} from "../../repositories/passkey-challenges.js";
import type { PasskeyRow } from "../../repositories/passkeys.js";
import type { AuthDeps } from "../deps.js";

/**
 * What the passkey flows share: challenges (random, sealed to their purpose, workspace, user
 * and pending login, five minutes, single use) and the checks of the JSON shapes browsers
 * send (PublicKeyCredential.toJSON()).
 */

export const challengeTtlMs = 5 * 60_000;

export const passkeyInvalid = () =>
  new UnauthenticatedError("PASSKEY_INVALID", "the passkey could not be verified");

/** What a challenge is bound to: checked when it is answered, from the answer's own scope. */
export interface ChallengeBinding {
  readonly workspaceId: string;
  readonly purpose: ChallengePurpose;
  /** The member who must answer; null for a username-less sign-in. */
  readonly userId: string | null;
  readonly pendingLoginId: string | null;
}

// A challenge: version (1 byte) ‖ flags (1: bit 0, user verification required) ‖ expiry in ms
// since the epoch (6) ‖ random nonce (16) ‖ tag (16). The tag is an HMAC under the token
// secret over the first 24 bytes and the binding, so that a challenge names nothing readable
// (no user or pending-login id goes to the browser) and cannot be forged, moved to another
// workspace, purpose, member or pending login, or extended.
const version = 1;
const headLength = 24;
const challengeLength = headLength + 16;

function tagOf(secret: Buffer, head: Buffer, binding: ChallengeBinding): Buffer {
  return hmacSha256(secret)
    .update("keygate/passkey-challenge/v2\0")
    .update(head)
    .update(
      [
        binding.workspaceId,
        binding.purpose,
        binding.userId ?? "",
        binding.pendingLoginId ?? "",
      ].join("\0"),
    )
    .digest()
    .subarray(0, 16);
}

function challengeHash(secret: Buffer, challenge: string): Buffer {
  return hmacSha256(secret).update(`keygate/passkey-challenge/v1\0${challenge}`).digest();
}

/**
 * A fresh challenge for the binding. Nothing is stored: handing one out costs no row, so no
 * caller can fill the database with challenges; spending it (spendChallenge) stores its hash.
 */
export function newChallenge(
  deps: Pick<AuthDeps, "clock" | "tokenSecret">,
  binding: ChallengeBinding & { userVerification: UserVerification },
): { bytes: Uint8Array<ArrayBuffer>; text: string } {
  const head = Buffer.alloc(headLength);
  head.writeUInt8(version, 0);
  head.writeUInt8(binding.userVerification === "required" ? 1 : 0, 1);
  head.writeUIntBE(deps.clock.now().getTime() + challengeTtlMs, 2, 6);
  randomFillSync(head, 8, 16);
  const bytes = Buffer.concat([head, tagOf(deps.tokenSecret, head, binding)]);
  return { bytes: new Uint8Array(bytes), text: bytes.toString("base64url") };
}

/**
 * The spent row of the challenge an answer signed: one of this binding and not expired, else
 * UNAUTHENTICATED / PASSKEY_INVALID. Writing the row (spendChallenge, or a statement that
 * spends it beside what it reads) tells whether it was spent before.
 */
export function challengeToSpend(
  deps: Pick<AuthDeps, "clock" | "tokenSecret">,
  binding: ChallengeBinding & { challenge: string },
): SpentChallenge {
  const bytes = Buffer.from(binding.challenge, "base64url");
  // One spelling per challenge: base64url decoding ignores padding and the unused bits of the
  // last character, so without this "C", "C=" and fifteen other texts would be one challenge
  // under seventeen spent-hashes.
  if (bytes.toString("base64url") !== binding.challenge) throw passkeyInvalid();
  if (bytes.length !== challengeLength || bytes[0] !== version) throw passkeyInvalid();
  const head = bytes.subarray(0, headLength);
  if (!timingSafeEqual(bytes.subarray(headLength), tagOf(deps.tokenSecret, head, binding)))
    throw passkeyInvalid();
  const now = deps.clock.now();
  const expiresAt = new Date(head.readUIntBE(2, 6));
  if (expiresAt.getTime() <= now.getTime()) throw passkeyInvalid();
  return {
    workspaceId: binding.workspaceId,
    userId: binding.userId,
    purpose: binding.purpose,
    hash: challengeHash(deps.tokenSecret, binding.challenge),
    userVerification: (head.readUInt8(1) & 1) === 1 ? "required" : "preferred",
    now,
    expiresAt,
  };
}

/**
 * Spends the challenge an answer signed, in the caller's tenant transaction: one of this
 * binding, not expired, and not spent before. Answers the user verification it asked for;
 * UNAUTHENTICATED / PASSKEY_INVALID otherwise. The caller commits the spending whether or not
 * the rest of the answer checks out, so no answer is tried twice against one challenge.
 */
export async function spendChallenge(
  tx: DatabaseTransactionConnection,
  deps: Pick<AuthDeps, "clock" | "tokenSecret">,
  binding: ChallengeBinding & { challenge: string },
): Promise<{ userVerification: UserVerification }> {
  const spent = challengeToSpend(deps, binding);
  if (!(await spendPasskeyChallenge(tx, spent))) throw passkeyInvalid();
  return { userVerification: spent.userVerification };
}

const b64url = z
  .string()
  .min(1)
  .max(16_384)
  .regex(/^[A-Za-z0-9_-]+={0,2}$/, "expected base64url");
const common = {
  id: b64url.max(1_400),
  rawId: b64url.max(1_400),
  type: z.literal("public-key"),
  authenticatorAttachment: z.enum(["platform", "cross-platform"]).optional(),
  clientExtensionResults: z.record(z.string(), z.unknown()).default({}),
};
const registrationShape = z.object({
  ...common,
  response: z.object({
    clientDataJSON: b64url,
    attestationObject: b64url,
    transports: z.array(z.string().max(32)).max(16).optional(),
    authenticatorData: b64url.optional(),
    publicKey: b64url.optional(),
    publicKeyAlgorithm: z.number().optional(),
  }),
});
const authenticationShape = z.object({
  ...common,
  response: z.object({
    clientDataJSON: b64url,
    authenticatorData: b64url,
    signature: b64url,
    userHandle: b64url.max(128).optional(),
  }),
});
const clientDataShape = z.object({ challenge: b64url.max(512), type: z.string() });

function shapeOf<T>(schema: z.ZodType<T>, value: unknown): { credential: T; challenge: string } {
  const parsed = schema.safeParse(value ?? null);
  const bad = (issues: readonly { path: PropertyKey[]; message: string }[]) =>
    new InvalidArgumentError(
      issues.map((i) => ({
        field: ["credential", ...i.path.map(String)].join("."),
        description: i.message,
      })),
    );
  if (!parsed.success) throw bad(parsed.error.issues);
  const response = (parsed.data as { response: { clientDataJSON: string } }).response;
  let clientData: unknown;
  try {
    clientData = JSON.parse(Buffer.from(response.clientDataJSON, "base64url").toString("utf8"));
  } catch {
    throw bad([{ path: ["response", "clientDataJSON"], message: "is not base64url JSON" }]);
  }
  const data = clientDataShape.safeParse(clientData);
  if (!data.success)
    throw bad(
      data.error.issues.map((i) => ({ ...i, path: ["response", "clientDataJSON", ...i.path] })),
    );
  return { credential: parsed.data, challenge: data.data.challenge };
}

/** A RegistrationResponseJSON's shape and the challenge it answers; INVALID_ARGUMENT otherwise. */
export function registrationOf(value: unknown): {
  credential: RegistrationResponseJSON;
  challenge: string;
} {
  return shapeOf(registrationShape, value) as {
    credential: RegistrationResponseJSON;
    challenge: string;
  };
}

/** An AuthenticationResponseJSON's shape and the challenge it answers. */
export function assertionOf(value: unknown): {
  credential: AuthenticationResponseJSON;
  challenge: string;
} {
  return shapeOf(authenticationShape, value) as {
    credential: AuthenticationResponseJSON;
    challenge: string;
  };
}

const b64 = (v: unknown) => Buffer.from(v as Uint8Array).toString("base64url");

/**
 * Whether a registration's COSE public key can ever verify an assertion: one of the algorithms
 * the options ask for (EdDSA on Ed25519, ES256 on P-256, RS256 of at least 2048 bits) and a
 * key that imports (a point on its curve). Attestation "none" signs nothing at registration,
 * so without this any bytes would be stored as a factor that can never be used.
 */
export function usablePublicKey(publicKey: Uint8Array): boolean {
  try {
    // A CBOR map keyed by COSE numbers; read as such, whatever its key type.
    const key = decodeCredentialPublicKey(new Uint8Array(publicKey)) as unknown as Map<
      number,
      unknown
    >;
    const kty = key.get(cose.COSEKEYS.kty);
    const alg = key.get(cose.COSEKEYS.alg);
    const crv = key.get(cose.COSEKEYS.crv);
    let jwk: JsonWebKey;
    if (kty === cose.COSEKTY.EC2 && alg === cose.COSEALG.ES256 && crv === cose.COSECRV.P256) {
      jwk = {
        kty: "EC",
        crv: "P-256",
        x: b64(key.get(cose.COSEKEYS.x)),
        y: b64(key.get(cose.COSEKEYS.y)),
      };
    } else if (
      kty === cose.COSEKTY.OKP &&
      alg === cose.COSEALG.EdDSA &&
      crv === cose.COSECRV.ED25519
    ) {
      jwk = { kty: "OKP", crv: "Ed25519", x: b64(key.get(cose.COSEKEYS.x)) };
    } else if (kty === cose.COSEKTY.RSA && alg === cose.COSEALG.RS256) {
      const n = key.get(cose.COSEKEYS.n) as Uint8Array | undefined;
      if (!n || n.length < 256) return false;
      jwk = { kty: "RSA", n: b64(n), e: b64(key.get(cose.COSEKEYS.e)) };
    } else {
      return false;
    }
    return createPublicKey({ key: jwk, format: "jwk" }).type === "public";
  } catch {
    return false;
  }
}

/** allowCredentials / excludeCredentials entries for a member's passkeys. */
export function descriptorsOf(passkeys: readonly PasskeyRow[]) {
  return passkeys.map((p) => ({
    id: p.credential_id.toString("base64url"),
    transports: [...p.transports],
  }));
}

/** "hwk" for a credential bound to one authenticator, "swk" for one synced between devices. */
export function methodOf(backedUp: boolean): "hwk" | "swk" {
  return backedUp ? "swk" : "hwk";
}
