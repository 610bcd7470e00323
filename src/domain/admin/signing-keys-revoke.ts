import { NotFoundError } from "../../errors.js";
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
  deps: Pick<AdminDeps, "signingKeys" | "idTokenKeys" | "clock" | "revocations">,
  meta: RequestMeta,
  caller: Caller,
  input: { kid: string },
): Promise<{ key: SigningKeyInfoRow; promoted: string | null }> {
  requireDeploymentAdmin(caller);
  new Violations().required("kid", input.kid, 100).throwIfAny();
  const options = {
    inTransaction: (
      tx: Parameters<typeof audit>[0],
      key: SigningKeyInfoRow,
      promoted: string | null,
    ) =>
      audit(tx, deps, meta, {
        type: "signing_key_revoked",
        workspaceId: null,
        actor: actorOf(caller),
        outcome: "success",
        details: { kid: key.kid, ...(promoted ? { promoted_kid: promoted } : {}) },
      }),
  };
  // Each ring knows only its own keys: an access key, else an ID-token key.
  let result: Awaited<ReturnType<typeof deps.signingKeys.revoke>>;
  try {
    result = await deps.signingKeys.revoke(input.kid, options);
  } catch (error) {
    if (!(error instanceof NotFoundError) || deps.idTokenKeys === undefined) throw error;
    result = await deps.idTokenKeys.revoke(input.kid, options);
  }
  await deps.revocations.changed();
  return result;
}
