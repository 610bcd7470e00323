import type { WorkspaceSettings } from "../../config.js";
import { NotFoundError, UnauthenticatedError } from "../../errors.js";
import type { ChallengePurpose, UserVerification } from "../../repositories/passkey-challenges.js";
import type { PendingLoginRow } from "../../repositories/pending-logins.js";
import { findWorkspaceById, type WorkspaceRow } from "../../repositories/workspaces.js";
import type { AuthDeps, Principal, RequestMeta } from "../deps.js";
import { livePendingLogin } from "../second-step.js";
import { effectiveSettings } from "../settings.js";
import { Violations } from "../validate.js";
import { lookUpWorkspace } from "../workspace-lookup.js";
import type { ChallengeBinding } from "./webauthn.js";

/**
 * Whose passkey check a call is, in which workspace, and what its challenge is bound to: the
 * rules of the three purposes passkey-authentication.ts serves.
 */

export type PasskeyPurpose = "passkey_sign_in" | "login_second_step" | "sensitive_action";

export interface Scope {
  readonly purpose: PasskeyPurpose;
  readonly workspace: WorkspaceRow;
  readonly settings: WorkspaceSettings;
  /** Who must answer; null for a sign-in, where the credential names them. */
  readonly userId: string | null;
  readonly pending: PendingLoginRow | null;
  readonly challengePurpose: ChallengePurpose;
  readonly userVerification: UserVerification;
}

export interface ScopeInput {
  readonly purpose: PasskeyPurpose | undefined;
  readonly pendingLoginId: string;
  readonly workspaceId: string;
  readonly workspaceSlug: string;
}

const flowDisabled = (what = "sign-in with a passkey") =>
  new NotFoundError(`${what} is disabled in this workspace`, "FLOW_DISABLED");

export async function scopeOf(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: ScopeInput,
): Promise<Scope> {
  const purpose = input.purpose;
  if (!purpose) {
    new Violations().add("purpose", "is required").throwIfAny();
    throw new Error("unreachable");
  }
  if (purpose === "passkey_sign_in") {
    const workspace = await lookUpWorkspace(deps.pool, {
      workspaceId: input.workspaceId,
      workspaceSlug: input.workspaceSlug,
      header: meta.workspaceHeader,
    });
    const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
    if (!settings.passkey_sign_in || settings.mfa === "off") throw flowDisabled();
    return {
      purpose,
      workspace,
      settings,
      userId: null,
      pending: null,
      challengePurpose: "sign_in",
      // Alone, a passkey is the whole sign-in: possession and a PIN or biometric.
      userVerification: "required",
    };
  }
  if (purpose === "login_second_step") {
    const pending = await livePendingLogin(deps, input.pendingLoginId);
    if (pending.step !== "factor") throw new NotFoundError("pending login not found or expired");
    const workspace = (await findWorkspaceById(deps.pool, pending.workspace_id)) as WorkspaceRow;
    const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
    // Factors switched off after the login began: nothing of them counts any more.
    if (settings.mfa === "off") throw flowDisabled("a second factor");
    return {
      purpose,
      workspace,
      settings,
      userId: pending.user_id,
      pending,
      challengePurpose: "second_step",
      userVerification: "preferred",
    };
  }
  if (!principal)
    throw new UnauthenticatedError(
      "UNAUTHENTICATED",
      "send `authorization: Bearer <access token>`",
    );
  const workspace = await findWorkspaceById(deps.pool, principal.workspaceId);
  if (!workspace) throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended");
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (settings.mfa === "off") throw flowDisabled("confirming with a passkey");
  return {
    purpose,
    workspace,
    settings,
    userId: principal.userId,
    pending: null,
    challengePurpose: "sensitive_action",
    userVerification: "preferred",
  };
}

export const bindingOf = (scope: Scope): ChallengeBinding => ({
  workspaceId: scope.workspace.id,
  purpose: scope.challengePurpose,
  userId: scope.userId,
  pendingLoginId: scope.pending?.id ?? null,
});
