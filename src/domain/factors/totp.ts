import { randomBytes } from "node:crypto";
import { Secret, TOTP } from "otpauth";
import QRCode from "qrcode";
import type { DatabaseTransactionConnection } from "slonik";
import { withTenant } from "../../db/with-tenant.js";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  UnauthenticatedError,
} from "../../errors.js";
import { factorSummary } from "../../repositories/factors.js";
import { findMembership, lockMembershipForFactorChange } from "../../repositories/memberships.js";
import { deleteRecoveryCodes } from "../../repositories/recovery-codes.js";
import {
  confirmTotpEnrollment,
  deleteConfirmedTotpFactor,
  findTotpFactor,
  type TotpFactorRow,
  upsertTotpEnrollment,
  useTotpStep,
} from "../../repositories/totp-factors.js";
import { findUserById } from "../../repositories/users.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import { consumeActionProof } from "../action-proofs.js";
import { audit } from "../audit.js";
import type { AuthDeps, Principal, RequestMeta } from "../deps.js";
import { noticeFactorChange } from "../factor-notice.js";
import {
  endSessionsOpenedWithoutFactor,
  finishPendingLogin,
  mfaRequired,
  tokensAfterFactor,
} from "../second-step.js";
import type { IssuedTokens } from "../sessions.js";
import { effectiveSettings } from "../settings.js";
import { Violations } from "../validate.js";
import { type EnrollmentCaller, enrollmentCaller } from "./enrollment.js";
import { issueRecoveryCodes } from "./recovery-codes.js";

/**
 * Authenticator apps (TOTP, RFC 6238: HMAC-SHA1, 6 digits, 30-second steps), one per
 * membership. The 160-bit secret is sealed at rest, bound to the membership, and answered
 * only by EnrollTotp; a code is accepted one step either side of now, and once: its step must
 * be later than the last one used (SECURITY.md 39).
 */

const periodSeconds = 30;
/** Steps either side of now that are accepted: clocks drift, people type slowly. */
const windowSteps = 1;
/** Time to scan the QR code and type the first code. */
const enrollmentTtlSeconds = 10 * 60;

export const codeInvalid = () =>
  new UnauthenticatedError("CODE_INVALID", "the code is invalid or has expired");

interface Member {
  readonly workspaceId: string;
  readonly userId: string;
}

const totpOf = (secret: Buffer) =>
  new TOTP({
    secret: new Secret({ buffer: Uint8Array.from(secret).buffer }),
    algorithm: "SHA1",
    digits: 6,
    period: periodSeconds,
  });

/**
 * The time step of the code within the window around `nowMs`, the latest one when several
 * match; null when none does, or when the sealed secret does not open for this membership
 * (a row copied from elsewhere).
 */
function matchingStep(
  deps: AuthDeps,
  row: Pick<TotpFactorRow, "secret_sealed">,
  member: Member,
  code: string,
  nowMs: number,
): number | null {
  if (!/^\d{6}$/.test(code)) return null;
  let secret: Buffer;
  try {
    secret = deps.totpSecrets.open(row.secret_sealed, member);
  } catch {
    deps.logger.warn(
      { workspaceId: member.workspaceId, userId: member.userId },
      "an authenticator-app secret does not open for its membership",
    );
    return null;
  }
  const totp = totpOf(secret);
  const now = totp.counter({ timestamp: nowMs });
  let found: number | null = null;
  for (let delta = -windowSteps; delta <= windowSteps; delta++) {
    const timestamp = nowMs + delta * periodSeconds * 1000;
    if (totp.validate({ token: code, timestamp, window: 0 }) === 0) found = now + delta;
  }
  secret.fill(0);
  return found;
}

/**
 * Spends a code of the membership's confirmed app, in the caller's transaction: true once
 * per code, and never for a code of a step at or before the last one used, even under
 * concurrency (the step is claimed by one conditional UPDATE).
 */
export async function spendTotpCode(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  member: Member,
  code: string,
): Promise<boolean> {
  const row = await findTotpFactor(tx, member.workspaceId, member.userId);
  if (!row || row.confirmed_at === null) return false;
  const step = matchingStep(deps, row, member, code, deps.clock.now().getTime());
  if (step === null) return false;
  return useTotpStep(tx, { ...member, step });
}

const memberOf = (c: EnrollmentCaller): Member => ({
  workspaceId: c.workspace.id,
  userId: c.user.id,
});

export interface TotpEnrollment {
  readonly otpauthUri: string;
  readonly secret: string;
  readonly qrCodeSvg: string;
  readonly expiresAt: Date;
}

/**
 * EnrollTotp: a new secret for the caller's membership, answered this once (never again by
 * any call); a new enrollment replaces an unconfirmed one, never a confirmed app.
 */
export async function enrollTotp(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: { pendingLoginId: string; actionProof: string },
): Promise<TotpEnrollment> {
  const caller = await enrollmentCaller(deps, principal, input.pendingLoginId);
  const member = memberOf(caller);
  const existing = await withTenant(deps.pool, member.workspaceId, (tx) =>
    findTotpFactor(tx, member.workspaceId, member.userId),
  );
  const exists = () =>
    new AlreadyExistsError("an authenticator app is set up already: remove it first");
  if (existing?.confirmed_at != null) throw exists();
  if (caller.principal && caller.settings.action_proof_required) {
    await consumeActionProof(deps, caller.principal, input.actionProof);
  }
  const secret = randomBytes(20);
  const now = deps.clock.now();
  const expiresAt = new Date(now.getTime() + enrollmentTtlSeconds * 1000);
  const row = await withTenant(deps.pool, member.workspaceId, async (tx) => {
    const row = await upsertTotpEnrollment(tx, {
      ...member,
      secretSealed: deps.totpSecrets.seal(secret, member),
      now,
      expiresAt,
    });
    if (row) {
      await audit(tx, deps, meta, {
        type: "totp_enrollment_started",
        workspaceId: member.workspaceId,
        userId: member.userId,
        sessionId: caller.principal?.sessionId ?? null,
        outcome: "success",
      });
    }
    return row;
  });
  if (!row) throw exists();
  const totp = totpOf(secret);
  secret.fill(0);
  // Apps show the issuer; the workspace's name tells apart the entries of one account.
  totp.issuer = caller.workspace.name;
  totp.label = caller.user.email;
  const otpauthUri = totp.toString();
  return {
    otpauthUri,
    secret: totp.secret.base32,
    qrCodeSvg: await QRCode.toString(otpauthUri, { type: "svg", errorCorrectionLevel: "M" }),
    expiresAt,
  };
}

/**
 * ConfirmTotp: a current code from the app confirms the enrollment. The membership's first
 * factor also gets its recovery codes; an enrollment pending login finishes with tokens.
 */
export async function confirmTotp(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: { code: string; pendingLoginId: string },
): Promise<{ recoveryCodes: string[]; tokens: IssuedTokens | undefined }> {
  new Violations().required("code", input.code, 64).throwIfAny();
  await deps.limiter.hit(null, [["code_verify_ip", meta.ipAddress ?? "unknown"]]);
  const caller = await enrollmentCaller(deps, principal, input.pendingLoginId);
  const member = memberOf(caller);
  const now = deps.clock.now();
  const outcome = await withTenant(deps.pool, member.workspaceId, async (tx) => {
    const row = await findTotpFactor(tx, member.workspaceId, member.userId);
    if (!row || row.confirmed_at !== null || (row.enrollment_expires_at ?? 0) <= now.getTime()) {
      throw new NotFoundError("no enrollment to confirm: start one with EnrollTotp");
    }
    const step = matchingStep(deps, row, member, input.code, now.getTime());
    const before = await factorSummary(tx, member.workspaceId, member.userId);
    const confirmed =
      step !== null && (await confirmTotpEnrollment(tx, { ...member, step, now })) !== null;
    if (!confirmed) {
      await audit(tx, deps, meta, {
        type: "factor_failed",
        workspaceId: member.workspaceId,
        userId: member.userId,
        outcome: "failure",
        details: { factor: "totp", purpose: "enrollment" },
      });
      return undefined;
    }
    const first = !before.totp && before.passkeys === 0;
    const recoveryCodes = first ? await issueRecoveryCodes(tx, deps, member) : [];
    await noticeFactorChange(tx, deps, meta, {
      workspace: caller.workspace,
      user: caller.user,
      change: "totp_added",
      sessionId: caller.principal?.sessionId ?? null,
      details: { recovery_codes: recoveryCodes.length },
    });
    if (!caller.pending) {
      if (first) {
        await endSessionsOpenedWithoutFactor(tx, deps, {
          ...member,
          keepSessionId: caller.principal?.sessionId ?? null,
        });
      }
      return { recoveryCodes, draft: undefined };
    }
    const draft = await finishPendingLogin(tx, deps, meta, {
      pending: caller.pending,
      step: "enroll",
      method: "otp",
      settings: caller.settings,
      details: { factor: "totp" },
    });
    // After the pending login is finished, so that it is not among what ends.
    if (first && draft) {
      await endSessionsOpenedWithoutFactor(tx, deps, { ...member, keepSessionId: draft.sessionId });
    }
    // Finished meanwhile, or the member was disabled: nothing of this commits.
    if (!draft) throw codeInvalid();
    return { recoveryCodes, draft };
  });
  if (!outcome) throw codeInvalid();
  deps.mail.wake();
  if (outcome.recoveryCodes.length > 0) await deps.revocations.changed();
  return {
    recoveryCodes: outcome.recoveryCodes,
    tokens: outcome.draft && (await tokensAfterFactor(deps, outcome.draft)),
  };
}

/**
 * RemoveTotp: with an action proof. Where the member needs a factor, the last one stays.
 * Recovery codes go with the last factor: there is nothing left for them to recover.
 */
export async function removeTotp(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal,
  input: { actionProof: string },
): Promise<void> {
  const { workspaceId, userId } = principal;
  const workspace = await findWorkspaceById(deps.pool, workspaceId);
  const user = await findUserById(deps.pool, userId);
  const membership = await findMembership(deps.pool, workspaceId, userId);
  if (!workspace || !user || !membership)
    throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended");
  const required = mfaRequired(
    effectiveSettings(workspace, deps.settings.workspaceDefaults),
    membership.role,
  );
  const factorRequired = () =>
    new FailedPreconditionError(
      "FACTOR_REQUIRED",
      "this workspace requires a factor: set up a passkey before removing the authenticator app",
    );
  const notFound = () => new NotFoundError("no authenticator app is set up");
  // Refused before the proof is spent, and checked again where the row is deleted.
  const have = await withTenant(deps.pool, workspaceId, (tx) =>
    factorSummary(tx, workspaceId, userId),
  );
  if (!have.totp) throw notFound();
  if (required && have.passkeys === 0) throw factorRequired();
  await consumeActionProof(deps, principal, input.actionProof, "factor");
  await withTenant(deps.pool, workspaceId, async (tx) => {
    if (!(await lockMembershipForFactorChange(tx, workspaceId, userId))) throw notFound();
    if (!(await deleteConfirmedTotpFactor(tx, workspaceId, userId))) throw notFound();
    const left = await factorSummary(tx, workspaceId, userId);
    if (left.passkeys === 0) {
      if (required) throw factorRequired();
      await deleteRecoveryCodes(tx, workspaceId, userId);
    }
    await noticeFactorChange(tx, deps, meta, {
      workspace,
      user,
      change: "totp_removed",
      sessionId: principal.sessionId,
    });
  });
  deps.mail.wake();
}
