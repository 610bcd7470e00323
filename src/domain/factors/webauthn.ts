import { createHmac, randomBytes } from "node:crypto";
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from "@simplewebauthn/server";
import type { DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { withTenant } from "../../db/with-tenant.js";
import {
  type ChallengePurpose,
  consumePasskeyChallenge,
  insertPasskeyChallenge,
  type PasskeyChallengeRow,
  type UserVerification,
} from "../../repositories/passkey-challenges.js";
import type { PasskeyRow } from "../../repositories/passkeys.js";
import type { AuthDeps } from "../deps.js";
import { InvalidArgumentError, UnauthenticatedError } from "../errors.js";

/**
 * What the passkey flows share: challenges (random, stored as keyed hashes, single use, five
 * minutes, bound to purpose, workspace, user and pending login) and the checks of the JSON
 * shapes browsers send (PublicKeyCredential.toJSON()).
 */

export const challengeTtlMs = 5 * 60_000;

export const passkeyInvalid = () =>
  new UnauthenticatedError("PASSKEY_INVALID", "the passkey could not be verified");

function challengeHash(secret: Buffer, challenge: string): Buffer {
  return createHmac("sha256", secret).update(`keygate/passkey-challenge/v1\0${challenge}`).digest();
}

/**
 * A fresh challenge, stored (hashed) in the caller's tenant transaction. Answers its bytes for
 * the options and their base64url form, which is what clientDataJSON carries back.
 */
export async function newChallenge(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  input: {
    workspaceId: string;
    userId: string | null;
    pendingLoginId: string | null;
    purpose: ChallengePurpose;
    userVerification: UserVerification;
  },
): Promise<{ bytes: Uint8Array<ArrayBuffer>; text: string }> {
  const bytes = randomBytes(32);
  const challenge = bytes.toString("base64url");
  const now = deps.clock.now();
  await insertPasskeyChallenge(tx, {
    ...input,
    hash: challengeHash(deps.tokenSecret, challenge),
    now,
    expiresAt: new Date(now.getTime() + challengeTtlMs),
  });
  return { bytes: new Uint8Array(bytes), text: challenge };
}

/**
 * Consumes the challenge the answer signed, in a transaction of its own: it is spent whether
 * or not the rest of the answer checks out, so no answer is tried twice against it.
 */
export async function spendChallenge(
  deps: AuthDeps,
  input: {
    workspaceId: string;
    purpose: ChallengePurpose;
    challenge: string;
    userId: string | null;
    pendingLoginId: string | null;
  },
): Promise<PasskeyChallengeRow> {
  const row = await withTenant(deps.pool, input.workspaceId, (tx) =>
    consumePasskeyChallenge(tx, {
      workspaceId: input.workspaceId,
      purpose: input.purpose,
      hash: challengeHash(deps.tokenSecret, input.challenge),
      userId: input.userId,
      pendingLoginId: input.pendingLoginId,
      now: deps.clock.now(),
    }),
  );
  if (!row) throw passkeyInvalid();
  return row;
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
