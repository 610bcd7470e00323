import { withTenant } from "../../db/with-tenant.js";
import { UnauthenticatedError } from "../../errors.js";
import { type FactorSummary, factorSummary } from "../../repositories/factors.js";
import { findTotpFactor } from "../../repositories/totp-factors.js";
import { findUserById, setEmailCodeSecondStep } from "../../repositories/users.js";
import { audit } from "../audit.js";
import type { AuthDeps, Principal, RequestMeta } from "../deps.js";

export interface FactorPreferences {
  readonly emailCodeSecondStep: boolean;
}

/** ListFactors' account part: the preferences (the factors come from their own flows). */
export async function factorOverview(
  deps: AuthDeps,
  principal: Principal,
): Promise<{
  summary: FactorSummary;
  /** When the authenticator app was confirmed; null without a confirmed one. */
  totpConfirmedAt: Date | null;
  preferences: FactorPreferences;
}> {
  return withTenant(deps.pool, principal.workspaceId, async (tx) => {
    const user = await findUserById(tx, principal.userId);
    if (!user) throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended");
    const totp = await findTotpFactor(tx, principal.workspaceId, principal.userId);
    return {
      summary: await factorSummary(tx, principal.workspaceId, principal.userId),
      totpConfirmedAt: totp?.confirmed_at != null ? new Date(totp.confirmed_at) : null,
      preferences: { emailCodeSecondStep: user.otp_login_opt_in },
    };
  });
}

/** UpdateFactorPreferences: the account's own choices; unset fields stay as they are. */
export async function updateFactorPreferences(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal,
  input: { emailCodeSecondStep?: boolean | undefined },
): Promise<FactorPreferences> {
  return withTenant(deps.pool, principal.workspaceId, async (tx) => {
    if (input.emailCodeSecondStep !== undefined) {
      await setEmailCodeSecondStep(tx, principal.userId, input.emailCodeSecondStep);
      await audit(tx, deps, meta, {
        type: "factor_preferences_updated",
        workspaceId: principal.workspaceId,
        userId: principal.userId,
        sessionId: principal.sessionId,
        outcome: "success",
        details: { email_code_second_step: input.emailCodeSecondStep },
      });
    }
    const user = await findUserById(tx, principal.userId);
    if (!user) throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended");
    return { emailCodeSecondStep: user.otp_login_opt_in };
  });
}
