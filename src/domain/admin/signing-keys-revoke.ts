import type { SigningKeyInfoRow } from "../../repositories/signing-keys.js";
import { actorOf, type Caller, requireDeploymentAdmin } from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { Violations } from "../validate.js";

/**
 * RevokeSigningKey (SECURITY.md 38): for a key that may be compromised. SigningKeys.revoke
 * unpublishes it and records the revocation that kills its tokens everywhere; this instance
 * applies that revocation before answering, the others within a second through the feed.
 */
export async function revokeSigningKey(
  deps: Pick<AdminDeps, "signingKeys" | "clock" | "revocations">,
  meta: RequestMeta,
  caller: Caller,
  input: { kid: string },
): Promise<{ key: SigningKeyInfoRow; promoted: string | null }> {
  requireDeploymentAdmin(caller);
  new Violations().required("kid", input.kid, 100).throwIfAny();
  const result = await deps.signingKeys.revoke(input.kid, {
    inTransaction: (tx, key, promoted) =>
      audit(tx, deps, meta, {
        type: "signing_key_revoked",
        workspaceId: null,
        actor: actorOf(caller),
        outcome: "success",
        details: { kid: key.kid, ...(promoted ? { promoted_kid: promoted } : {}) },
      }),
  });
  await deps.revocations.changed();
  return result;
}
