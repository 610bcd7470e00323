import type { DatabaseTransactionConnection } from "slonik";
import type { WorkspaceSettings } from "../config.js";
import { NotFoundError, PermissionDeniedError } from "../errors.js";
import { factorSummary } from "../repositories/factors.js";
import { findMembership, type Role } from "../repositories/memberships.js";
import {
  completePendingLogin,
  findPendingLogin,
  insertPendingLogin,
  type PendingLoginRow,
  type PendingStep,
} from "../repositories/pending-logins.js";
import { revokeSessions } from "../repositories/sessions.js";
import { findUserById, type UserRow } from "../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../repositories/workspaces.js";
import { type Amr, amrOf, withMethod } from "./amr.js";
import { audit } from "./audit.js";
import type { AuthDeps, Principal, RequestMeta } from "./deps.js";
import { guessSubject } from "./lockout.js";
import { type IssuedTokens, openSession, signTokens, type TokenDraft } from "./sessions.js";
import { effectiveSettings } from "./settings.js";
import { isUuid } from "./validate.js";

/** What can finish a pending login, as PendingLogin.factors lists it. */
export type FactorKind = "email_code" | "totp" | "passkey" | "recovery_code";

export interface PendingLoginView {
  readonly pendingLoginId: string;
  readonly expiresAt: Date;
  readonly factors: readonly FactorKind[];
  readonly enrollmentRequired: boolean;
}

/** Setting up a first authenticator app or passkey takes longer than typing a code. */
const enrollmentTtlSeconds = 15 * 60;

/** Whether a member of this role needs a factor of the workspace to sign in. */
export function mfaRequired(settings: WorkspaceSettings, role: Role): boolean {
  return (
    settings.mfa === "required" ||
    (settings.mfa === "optional" && settings.mfa_required_roles.includes(role))
  );
}

/** Whether a password login in this workspace needs the emailed second step. */
export function needsEmailStep(
  settings: WorkspaceSettings,
  user: Pick<UserRow, "otp_login_opt_in">,
): boolean {
  return (
    settings.otp_login === "required" ||
    (settings.otp_login === "optional" && user.otp_login_opt_in)
  );
}

/**
 * What a sign-in that proved `amr` still needs in this workspace, or null for nothing:
 * - a member who set up a factor here is asked for it (unless `amr` already has two factors);
 * - a member who needs one and has none sets one up first;
 * - otherwise the workspace's emailed second step, unless the first step was emailed itself.
 */
export async function planSecondStep(
  tx: DatabaseTransactionConnection,
  input: {
    workspaceId: string;
    user: Pick<UserRow, "id" | "otp_login_opt_in">;
    role: Role;
    settings: WorkspaceSettings;
    amr: readonly Amr[];
  },
): Promise<{ step: PendingStep; factors: FactorKind[] } | null> {
  if (input.amr.includes("mfa")) return null;
  if (input.settings.mfa !== "off") {
    const have = await factorSummary(tx, input.workspaceId, input.user.id);
    const factors: FactorKind[] = [];
    if (have.totp) factors.push("totp");
    if (have.passkeys > 0) factors.push("passkey");
    if (factors.length > 0) {
      if (have.recoveryCodesLeft > 0) factors.push("recovery_code");
      return { step: "factor", factors };
    }
    if (mfaRequired(input.settings, input.role)) return { step: "enroll", factors: [] };
  }
  if (!input.amr.includes("email") && needsEmailStep(input.settings, input.user)) {
    return { step: "email", factors: ["email_code"] };
  }
  return null;
}

/** Opens a pending login, in the caller's transaction. The caller sends the emailed code. */
export async function startPendingLogin(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  input: {
    workspace: Pick<WorkspaceRow, "id">;
    user: Pick<UserRow, "id">;
    settings: WorkspaceSettings;
    amr: readonly Amr[];
    plan: { step: PendingStep; factors: FactorKind[] };
  },
): Promise<PendingLoginView> {
  const now = deps.clock.now();
  const ttl = input.plan.step === "enroll" ? enrollmentTtlSeconds : input.settings.otp_ttl_seconds;
  const row = await insertPendingLogin(tx, {
    workspaceId: input.workspace.id,
    userId: input.user.id,
    ipAddress: meta.ipAddress,
    now,
    expiresAt: new Date(now.getTime() + ttl * 1000),
    amr: input.amr,
    step: input.plan.step,
  });
  return {
    pendingLoginId: row.id,
    expiresAt: new Date(row.expires_at),
    factors: input.plan.factors,
    enrollmentRequired: input.plan.step === "enroll",
  };
}

/** A live pending login by its public id; NOT_FOUND when unknown, finished or expired. */
export async function livePendingLogin(deps: AuthDeps, id: string): Promise<PendingLoginRow> {
  if (!isUuid(id)) throw new NotFoundError("pending login not found");
  const row = await findPendingLogin(deps.pool, id);
  if (!row || row.completed_at !== null || row.expires_at <= deps.clock.now().getTime()) {
    throw new NotFoundError("pending login not found or expired");
  }
  return row;
}

/**
 * Finishes a pending login whose `step` the caller just satisfied with `method`, inside the
 * pending login's tenant transaction (the same one that consumed the code or factor, so that
 * both happen or neither): exactly once, and only while the account and membership still
 * allow a sign-in. Undefined when it cannot be finished; the caller answers as for a wrong
 * code.
 */
export async function finishPendingLogin(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  input: {
    pending: Pick<PendingLoginRow, "id" | "workspace_id" | "user_id">;
    step: PendingStep;
    method: Amr;
    /** A passkey that checked user verification. */
    verified?: boolean;
    settings: WorkspaceSettings;
    details?: Record<string, string | number | boolean | null>;
  },
): Promise<TokenDraft | undefined> {
  const { pending } = input;
  const done = await completePendingLogin(tx, {
    workspaceId: pending.workspace_id,
    id: pending.id,
    step: input.step,
    now: deps.clock.now(),
  });
  if (!done) return undefined;
  const user = await findUserById(tx, pending.user_id);
  const membership = await findMembership(tx, pending.workspace_id, pending.user_id);
  if (!user || user.blocked || membership?.status !== "active") return undefined;
  const draft = await openSession(tx, deps, meta, {
    workspaceId: pending.workspace_id,
    userId: pending.user_id,
    role: membership.role,
    settings: input.settings,
    amr: withMethod(amrOf(done.amr), input.method, input.verified),
  });
  await audit(tx, deps, meta, {
    type: "login_succeeded",
    workspaceId: pending.workspace_id,
    userId: pending.user_id,
    sessionId: draft.sessionId,
    outcome: "success",
    details: { method: input.method, second_step: input.step, ...input.details },
  });
  return draft;
}

/**
 * AdminService and the other admin surfaces, called with a member's access token: where the
 * workspace requires a factor of the member's role, the token must carry two factors, so a
 * stolen password alone never administers the workspace (SECURITY.md 42).
 */
export async function requireAdminFactors(
  deps: Pick<AuthDeps, "pool" | "settings">,
  principal: Pick<Principal, "workspaceId" | "role" | "amr">,
): Promise<void> {
  if (principal.amr.includes("mfa")) return;
  const workspace = await findWorkspaceById(deps.pool, principal.workspaceId);
  if (!workspace) return;
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (mfaRequired(settings, principal.role)) {
    throw new PermissionDeniedError(
      "MFA_REQUIRED",
      "this workspace requires a second factor for your role: sign in with it",
    );
  }
}

/**
 * Tokens of a sign-in that a factor of the membership finished (a pending login's second step
 * or enrollment, a passkey sign-in), after its transaction committed. The sign-in succeeded,
 * so the account's count of failed attempts starts over, as after a password login without a
 * second step (the password login itself left it standing while a factor was still owed).
 */
export async function tokensAfterFactor(
  deps: AuthDeps,
  draft: TokenDraft,
  /** The signed-in account, when the caller read it already. */
  known?: Pick<UserRow, "id" | "email"> | null,
): Promise<IssuedTokens> {
  const user = known?.id === draft.userId ? known : await findUserById(deps.pool, draft.userId);
  if (user) await deps.lockout.clear(guessSubject(user.email, null));
  return signTokens(deps, draft);
}

/**
 * The membership's first factor is set up: its other sessions in the workspace were all
 * opened without one, so they end (a session stolen before, or the mailbox's, must not
 * outlive the factor that now guards the membership). The session that set it up stays.
 */
export async function endSessionsOpenedWithoutFactor(
  tx: DatabaseTransactionConnection,
  deps: Pick<AuthDeps, "clock">,
  input: { workspaceId: string; userId: string; keepSessionId: string | null },
): Promise<number> {
  const ended = await revokeSessions(tx, {
    workspaceId: input.workspaceId,
    userId: input.userId,
    reason: "first_factor_added",
    now: deps.clock.now(),
    exceptSessionId: input.keepSessionId,
  });
  return ended.length;
}
