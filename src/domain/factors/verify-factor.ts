import { withTenant } from "../../db/with-tenant.js";
import { NotFoundError, UnauthenticatedError } from "../../errors.js";
import { factorSummary } from "../../repositories/factors.js";
import { findUserById } from "../../repositories/users.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import { issueActionProof } from "../action-proofs.js";
import { audit } from "../audit.js";
import type { AuthDeps, Principal, RequestMeta } from "../deps.js";
import { noticeFactorChange } from "../factor-notice.js";
import { guessSubject } from "../lockout.js";
import { finishPendingLogin, livePendingLogin } from "../second-step.js";
import { type IssuedTokens, signTokens, type TokenDraft } from "../sessions.js";
import { effectiveSettings } from "../settings.js";
import { Violations } from "../validate.js";
import { spendRecoveryCode } from "./recovery-codes.js";
import { codeInvalid, spendTotpCode } from "./totp.js";

export type VerifyFactorPurpose = "login_second_step" | "sensitive_action";

export type VerifyFactorResult =
  | { kind: "tokens"; tokens: IssuedTokens }
  | { kind: "action_proof"; proof: string; expiresAt: Date };

/** The second step was finished by another call first: nothing of this one commits. */
class NotFinished extends Error {}

/**
 * VerifyFactor: an authenticator-app code or a recovery code of the membership, for the
 * second step of a password login (a pending login waiting for a factor) or for an action
 * proof (signed in). Each attempt counts towards the account's lockout before the code is
 * checked, as a password guess does, and a success clears it; every wrong code is audited and
 * answers CODE_INVALID, whatever was wrong (SECURITY.md 39, 40).
 */
export async function verifyFactor(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: {
    purpose: VerifyFactorPurpose | undefined;
    pendingLoginId: string;
    factor: { kind: "totp" | "recovery_code"; code: string } | undefined;
  },
): Promise<VerifyFactorResult> {
  const violations = new Violations();
  if (!input.purpose) violations.add("purpose", "must be LOGIN_SECOND_STEP or SENSITIVE_ACTION");
  if (!input.factor) violations.add("factor", "send totp_code or recovery_code");
  else
    violations.required(
      input.factor.kind === "totp" ? "totp_code" : "recovery_code",
      input.factor.code,
      64,
    );
  violations.throwIfAny();
  const purpose = input.purpose as VerifyFactorPurpose;
  const factor = input.factor as { kind: "totp" | "recovery_code"; code: string };
  await deps.limiter.hit(null, [["code_verify_ip", meta.ipAddress ?? "unknown"]]);

  let member: { workspaceId: string; userId: string };
  let pendingId: string | undefined;
  if (purpose === "login_second_step") {
    const pending = await livePendingLogin(deps, input.pendingLoginId);
    // A pending login that waits for the emailed code or a first factor is not finished here.
    if (pending.step !== "factor") throw new NotFoundError("pending login not found or expired");
    member = { workspaceId: pending.workspace_id, userId: pending.user_id };
    pendingId = pending.id;
  } else {
    if (!principal)
      throw new UnauthenticatedError(
        "UNAUTHENTICATED",
        "send `authorization: Bearer <access token>`",
      );
    member = { workspaceId: principal.workspaceId, userId: principal.userId };
  }
  const workspace = await findWorkspaceById(deps.pool, member.workspaceId);
  const user = await findUserById(deps.pool, member.userId);
  if (!workspace || !user) throw codeInvalid();
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (settings.mfa === "off") {
    throw new NotFoundError("factors are off in this workspace", "FLOW_DISABLED");
  }
  // The account's lockout, as for its password: reserved before the code is checked.
  const subject = guessSubject(user.email, null);
  await deps.lockout.reserve(subject);

  let outcome:
    | { kind: "draft"; draft: TokenDraft }
    | { kind: "action_proof"; proof: string; expiresAt: Date }
    | undefined;
  try {
    outcome = await withTenant(deps.pool, member.workspaceId, async (tx) => {
      const ok =
        factor.kind === "totp"
          ? await spendTotpCode(tx, deps, member, factor.code)
          : await spendRecoveryCode(tx, deps, member, factor.code);
      await audit(tx, deps, meta, {
        type: ok ? "factor_verified" : "factor_failed",
        workspaceId: member.workspaceId,
        userId: member.userId,
        sessionId: principal && !pendingId ? principal.sessionId : null,
        outcome: ok ? "success" : "failure",
        details: { factor: factor.kind, purpose },
      });
      if (!ok) return undefined;
      if (factor.kind === "recovery_code") {
        const left = await factorSummary(tx, member.workspaceId, member.userId);
        await noticeFactorChange(tx, deps, meta, {
          workspace,
          user,
          change: "recovery_code_used",
          sessionId: principal && !pendingId ? principal.sessionId : null,
          details: { purpose, recovery_codes_left: left.recoveryCodesLeft },
        });
      }
      if (pendingId) {
        const draft = await finishPendingLogin(tx, deps, meta, {
          pending: { id: pendingId, workspace_id: member.workspaceId, user_id: member.userId },
          step: "factor",
          method: "otp",
          settings,
          details: { factor: factor.kind },
        });
        if (!draft) throw new NotFinished();
        return { kind: "draft" as const, draft };
      }
      return {
        kind: "action_proof" as const,
        ...(await issueActionProof(tx, deps, member.workspaceId, member.userId, "factor")),
      };
    });
  } catch (error) {
    if (error instanceof NotFinished) throw codeInvalid();
    throw error;
  }
  if (!outcome) throw codeInvalid();
  await deps.lockout.clear(subject);
  if (factor.kind === "recovery_code") deps.mail.wake();
  if (outcome.kind === "action_proof") return outcome;
  return { kind: "tokens", tokens: await signTokens(deps, outcome.draft) };
}
