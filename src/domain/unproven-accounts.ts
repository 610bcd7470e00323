import type { DatabaseTransactionConnection } from "slonik";
import { asService } from "../db/with-tenant.js";
import { revokeUserSessions } from "../repositories/sessions.js";
import { resetUnprovenCredentials, type UserRow } from "../repositories/users.js";
import { audit } from "./audit.js";
import type { AuthDeps, RequestMeta } from "./deps.js";

/**
 * An account that never proved its address is no claim on it (SECURITY.md 28). When a
 * workspace provisions or invites an address whose account is unproven, whatever was set up
 * before (a password of someone's choosing, its sessions and tokens in every workspace) stops
 * opening anything: the password is replaced by the provisioning workspace's (or none, and the
 * owner sets one through the invitation or a reset, which prove the address), every session
 * ends and every access token is cut off. Runs in the caller's tenant transaction; answers
 * whether the account was reset, so the caller can announce the revocations after commit.
 */
export async function releaseUnprovenAccount(
  tx: DatabaseTransactionConnection,
  deps: Pick<AuthDeps, "clock">,
  meta: RequestMeta,
  input: { workspaceId: string; user: UserRow; passwordHash: string | null; actor: string },
): Promise<boolean> {
  if (input.user.email_verified) return false;
  const now = deps.clock.now();
  const ended = await asService(tx, async () => {
    if (
      !(await resetUnprovenCredentials(tx, {
        userId: input.user.id,
        passwordHash: input.passwordHash,
        now,
      }))
    )
      return null;
    return revokeUserSessions(tx, { userId: input.user.id, reason: "address_claimed", now });
  });
  if (ended === null) return false;
  await audit(tx, deps, meta, {
    type: "unproven_account_reset",
    workspaceId: input.workspaceId,
    userId: input.user.id,
    actor: input.actor,
    outcome: "success",
    details: { sessions_ended: ended.length, password_set: input.passwordHash !== null },
  });
  return true;
}
