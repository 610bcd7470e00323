import { isJwtAlgorithm } from "../../crypto/jwt-keys.js";
import { InvalidArgumentError } from "../../errors.js";
import { listAllSigningKeys, type SigningKeyInfoRow } from "../../repositories/signing-keys.js";
import {
  actorOf,
  type Caller,
  requireDeploymentAdmin,
  requireDeploymentRead,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { signingKeyPromotionDelayMs } from "../signing-key-rotation.js";

/**
 * RotateSigningKey: publishes a new key as `next`. It starts signing, and the active key
 * retires, once it has been published for signingKeyPromotionDelayMs; SigningKeys does that
 * on whichever instance loads the key set first after the delay (no scheduler needed).
 */
export async function rotateSigningKey(
  deps: Pick<AdminDeps, "signingKeys" | "clock">,
  meta: RequestMeta,
  caller: Caller,
  input: { algorithm: string },
): Promise<SigningKeyInfoRow> {
  requireDeploymentAdmin(caller);
  if (input.algorithm !== "" && !isJwtAlgorithm(input.algorithm)) {
    throw new InvalidArgumentError([
      { field: "algorithm", description: "must be ES256, EdDSA or RS256 (or empty)" },
    ]);
  }
  const algorithm = isJwtAlgorithm(input.algorithm)
    ? input.algorithm
    : deps.signingKeys.configuredAlgorithm;
  return deps.signingKeys.rotate({
    algorithm,
    inTransaction: (tx, key) =>
      audit(tx, deps, meta, {
        type: "signing_key_rotated",
        workspaceId: null,
        actor: actorOf(caller),
        outcome: "success",
        details: {
          kid: key.kid,
          algorithm: key.algorithm,
          signs_after: new Date(key.created_at + signingKeyPromotionDelayMs).toISOString(),
        },
      }),
  });
}

/** ListSigningKeys: every key with its status and times; the rows carry no private part. */
export async function listSigningKeys(
  deps: Pick<AdminDeps, "pool">,
  caller: Caller,
): Promise<readonly SigningKeyInfoRow[]> {
  requireDeploymentRead(caller);
  return listAllSigningKeys(deps.pool);
}
