import type { DatabaseTransactionConnection } from "slonik";
import type { UserRow } from "../repositories/users.js";
import type { WorkspaceRow } from "../repositories/workspaces.js";
import { audit } from "./audit.js";
import type { AuthDeps, RequestMeta } from "./deps.js";

/** Every change to a membership's factors, as audited (the event type) and as mailed. */
const changes = {
  totp_added: "An authenticator app was added",
  totp_removed: "The authenticator app was removed",
  passkey_added: "A passkey was added",
  passkey_removed: "A passkey was removed",
  recovery_codes_generated: "New recovery codes were made; the previous ones no longer work",
  recovery_code_used: "A recovery code was used to sign in",
  factors_reset: "An administrator removed your sign-in factors",
} as const;

export type FactorChange = keyof typeof changes;

/**
 * Audits a factor change and mails the account's address about it through the outbox, in the
 * caller's tenant transaction: the notice goes out exactly when the change commits. `details`
 * must not carry a secret.
 */
export async function noticeFactorChange(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  input: {
    workspace: Pick<WorkspaceRow, "id" | "name">;
    user: Pick<UserRow, "id" | "email">;
    change: FactorChange;
    sessionId?: string | null;
    /** Who acted, when not the account itself ("admin_key:<id>", "user:<id>"). */
    actor?: string;
    details?: Record<string, string | number | boolean | null>;
  },
): Promise<void> {
  await audit(tx, deps, meta, {
    type: input.change,
    workspaceId: input.workspace.id,
    userId: input.user.id,
    sessionId: input.sessionId ?? null,
    ...(input.actor ? { actor: input.actor } : {}),
    outcome: "success",
    ...(input.details ? { details: input.details } : {}),
  });
  await deps.mail.enqueue(tx, {
    workspaceId: input.workspace.id,
    to: input.user.email,
    template: "factor_changed",
    vars: {
      email: input.user.email,
      workspace: input.workspace.name,
      change: changes[input.change],
      time: deps.clock.now().toISOString(),
    },
  });
}
