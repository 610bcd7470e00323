import type { DatabaseTransactionConnection } from "slonik";
import { isOpaqueToken, newOpaqueToken, opaqueHash } from "../crypto/opaque-tokens.js";
import { withTenant } from "../db/with-tenant.js";
import { PermissionDeniedError } from "../errors.js";
import { insertActionProof, invalidateLiveCodes } from "../repositories/one-time-codes.js";
import { consumeLink } from "./codes.js";
import type { AuthDeps, Principal } from "./deps.js";

/**
 * Action proofs: short-lived tokens (kga_…) that a sensitive call presents to show that the
 * signed-in user confirmed it just before, with an emailed code (otp.ts) or a factor of the
 * membership. Stored as one-time links of their own purposes.
 */

const actionProofTtlSeconds = 5 * 60;

/**
 * A fresh action proof for the signed-in user, after a code or factor checked out in the
 * caller's tenant transaction; it replaces the user's unused one.
 */
export async function issueActionProof(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  workspaceId: string,
  userId: string,
  /** What confirmed it: an emailed code, or a factor of the membership. */
  via: "email" | "factor" = "email",
): Promise<{ proof: string; expiresAt: Date }> {
  const purpose = via === "factor" ? "factor_action_proof" : "action_proof";
  const now = deps.clock.now();
  const proof = newOpaqueToken("link").replace(/^kgl_/, "kga_");
  const expiresAt = new Date(now.getTime() + actionProofTtlSeconds * 1000);
  await invalidateLiveCodes(tx, { workspaceId, userId, purpose, now });
  await insertActionProof(tx, {
    workspaceId,
    userId,
    purpose,
    hash: opaqueHash(deps.tokenSecret, "link", proof),
    now,
    expiresAt,
  });
  return { proof, expiresAt };
}

/** Consumes an action proof of the signed-in user; PERMISSION_DENIED when it is missing or spent. */
export async function consumeActionProof(
  deps: AuthDeps,
  principal: Principal,
  proof: string,
  /**
   * "factor": only a proof from a factor of the membership will do. Changing the factors
   * themselves needs one: the mailbox alone (an emailed code) must not replace or remove
   * the second factor it does not count as.
   */
  needs: "any" | "factor" = "any",
): Promise<void> {
  const denied = () =>
    new PermissionDeniedError(
      "ACTION_PROOF_REQUIRED",
      needs === "factor"
        ? "confirm this with your authenticator app, a recovery code or a passkey first"
        : "confirm this action with a code first",
    );
  if (!proof.startsWith("kga_") || !isOpaqueToken("link", `kgl_${proof.slice(4)}`)) throw denied();
  const purposes =
    needs === "factor" ? ["factor_action_proof"] : ["action_proof", "factor_action_proof"];
  const r = await withTenant(deps.pool, principal.workspaceId, async (tx) => {
    for (const purpose of purposes as ("action_proof" | "factor_action_proof")[]) {
      const spent = await consumeLink(tx, {
        tokenSecret: deps.tokenSecret,
        purpose,
        token: proof,
        now: deps.clock.now(),
      });
      if (spent.ok) return spent;
    }
    return { ok: false as const };
  });
  if (!r.ok || r.userId !== principal.userId) throw denied();
}
