import type { DatabaseTransactionConnection } from "slonik";
import type { WorkspaceSettings } from "../config.js";
import { withTenant } from "../db/with-tenant.js";
import { NotFoundError, UnauthenticatedError } from "../errors.js";
import { findMembership, type Role } from "../repositories/memberships.js";
import {
  findUserByEmail,
  findUserById,
  markEmailVerified,
  normalizeEmail,
  type UserRow,
} from "../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../repositories/workspaces.js";
import { issueActionProof } from "./action-proofs.js";
import type { Amr } from "./amr.js";
import { audit } from "./audit.js";
import { consumeCode, issueCode } from "./codes.js";
import type { AuthDeps, MailTemplateName, Principal, RequestMeta } from "./deps.js";
import { answerFloor } from "./public-flow.js";
import {
  finishPendingLogin,
  livePendingLogin,
  type PendingLoginView,
  planSecondStep,
  startPendingLogin,
} from "./second-step.js";
import { type IssuedTokens, openSession, signTokens, type TokenDraft } from "./sessions.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";
import { lookUpWorkspace } from "./workspace-lookup.js";

export type OtpPurpose =
  | "login_second_step"
  | "passwordless_sign_in"
  | "email_verification"
  | "sensitive_action";

const templateOf: Record<OtpPurpose, MailTemplateName> = {
  login_second_step: "login_code",
  passwordless_sign_in: "login_code",
  email_verification: "verify_email_code",
  sensitive_action: "action_code",
};

const codeInvalid = () =>
  new UnauthenticatedError("CODE_INVALID", "the code is invalid or has expired");

async function sendCode(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  input: {
    workspace: Pick<WorkspaceRow, "id" | "name">;
    user: Pick<UserRow, "id" | "email">;
    purpose: OtpPurpose;
    ttlSeconds: number;
  },
): Promise<void> {
  const { secret } = await issueCode(tx, {
    tokenSecret: deps.tokenSecret,
    workspaceId: input.workspace.id,
    userId: input.user.id,
    purpose: input.purpose,
    kind: "code",
    now: deps.clock.now(),
    ttlSeconds: input.ttlSeconds,
  });
  await deps.mail.enqueue(tx, {
    workspaceId: input.workspace.id,
    to: input.user.email,
    template: templateOf[input.purpose],
    vars: {
      email: input.user.email,
      workspace: input.workspace.name,
      code: secret,
      minutes: String(Math.round(input.ttlSeconds / 60)),
    },
  });
}

/**
 * After a first factor checked out (`amr`): either a session, or a pending login when the
 * workspace wants more of this member (second-step.ts), with its code emailed where that is
 * the step. In the caller's transaction; the caller audits a session it gets.
 */
export async function sessionOrPending(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  input: {
    workspace: WorkspaceRow;
    user: UserRow;
    role: Role;
    settings: WorkspaceSettings;
    amr: readonly Amr[];
  },
): Promise<{ kind: "pending"; pending: PendingLoginView } | { kind: "draft"; draft: TokenDraft }> {
  const plan = await planSecondStep(tx, {
    workspaceId: input.workspace.id,
    user: input.user,
    role: input.role,
    settings: input.settings,
    amr: input.amr,
  });
  if (!plan) {
    const draft = await openSession(tx, deps, meta, {
      workspaceId: input.workspace.id,
      userId: input.user.id,
      role: input.role,
      settings: input.settings,
      amr: input.amr,
    });
    return { kind: "draft", draft };
  }
  const pending = await startPendingLogin(tx, deps, meta, { ...input, plan });
  if (plan.step === "email") {
    await sendCode(tx, deps, {
      ...input,
      purpose: "login_second_step",
      ttlSeconds: input.settings.otp_ttl_seconds,
    });
  }
  await audit(tx, deps, meta, {
    type: "login_second_step_sent",
    workspaceId: input.workspace.id,
    userId: input.user.id,
    outcome: "success",
    details: { step: plan.step },
  });
  return { kind: "pending", pending };
}

/**
 * A first factor that reached the mailbox (an emailed code, a magic link, an invitation
 * link): it proves the address, then sessionOrPending with amr "email".
 */
export async function mailboxSignIn(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  input: { workspace: WorkspaceRow; user: UserRow; role: Role; settings: WorkspaceSettings },
): ReturnType<typeof sessionOrPending> {
  if (!input.user.email_verified) await markEmailVerified(tx, input.user.id);
  return sessionOrPending(tx, deps, meta, { ...input, amr: ["email"] });
}

export interface OtpInput {
  readonly purpose: OtpPurpose | undefined;
  readonly email: string;
  readonly pendingLoginId: string;
  readonly workspaceId: string;
  readonly workspaceSlug: string;
}

function requirePurpose(purpose: OtpPurpose | undefined): OtpPurpose {
  if (!purpose) new Violations().add("purpose", "is required").throwIfAny();
  return purpose as OtpPurpose;
}

/** SendOtp: emails a code for the purpose; the answer says nothing about who has an account. */
export async function sendOtp(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: OtpInput,
): Promise<{ expiresAt: Date }> {
  const evenOut = answerFloor();
  const purpose = requirePurpose(input.purpose);
  if (purpose === "login_second_step") {
    const pending = await livePendingLogin(deps, input.pendingLoginId);
    // A pending login that waits for a factor of the membership is not finished by email.
    if (pending.step !== "email") throw new NotFoundError("pending login not found or expired");
    const workspace = (await findWorkspaceById(deps.pool, pending.workspace_id)) as WorkspaceRow;
    const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
    const user = (await findUserById(deps.pool, pending.user_id)) as UserRow;
    await deps.limiter.hit({ id: workspace.id, settings }, [
      ["otp_send_address", normalizeEmail(user.email)],
    ]);
    await withTenant(deps.pool, workspace.id, (tx) =>
      sendCode(tx, deps, { workspace, user, purpose, ttlSeconds: settings.otp_ttl_seconds }),
    );
    deps.mail.wake();
    return {
      expiresAt: new Date(
        Math.min(pending.expires_at, deps.clock.now().getTime() + settings.otp_ttl_seconds * 1000),
      ),
    };
  }
  if (purpose === "sensitive_action" && !principal) {
    throw new UnauthenticatedError(
      "UNAUTHENTICATED",
      "send `authorization: Bearer <access token>`",
    );
  }
  const signedIn =
    principal &&
    (purpose === "sensitive_action" || (purpose === "email_verification" && input.email === ""));
  if (!signedIn) new Violations().email("email", input.email).throwIfAny();
  const workspace = await lookUpWorkspace(deps.pool, {
    workspaceId: signedIn ? principal.workspaceId : input.workspaceId,
    workspaceSlug: signedIn ? "" : input.workspaceSlug,
    header: meta.workspaceHeader,
  });
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (purpose === "passwordless_sign_in" && !settings.passwordless_otp)
    throw new NotFoundError("sign-in with a code is disabled");
  if (purpose === "email_verification" && settings.email_verification === "off") {
    throw new NotFoundError("email verification is disabled");
  }
  const subject = signedIn ? `user:${principal.userId}` : normalizeEmail(input.email);
  await deps.limiter.hit({ id: workspace.id, settings }, [["otp_send_address", subject]]);
  const sent = await withTenant(deps.pool, workspace.id, async (tx) => {
    const user = signedIn
      ? await findUserById(tx, principal.userId)
      : await findUserByEmail(tx, input.email);
    const membership = user ? await findMembership(tx, workspace.id, user.id) : null;
    if (!user || user.blocked || membership?.status !== "active") return false;
    if (purpose === "email_verification" && user.email_verified) return false;
    await sendCode(tx, deps, { workspace, user, purpose, ttlSeconds: settings.otp_ttl_seconds });
    await audit(tx, deps, meta, {
      type: "otp_sent",
      workspaceId: workspace.id,
      userId: user.id,
      outcome: "success",
      details: { purpose },
    });
    return true;
  });
  if (sent) deps.mail.wake();
  await evenOut();
  return { expiresAt: new Date(deps.clock.now().getTime() + settings.otp_ttl_seconds * 1000) };
}

export type VerifyOtpResult =
  | { kind: "tokens"; tokens: IssuedTokens }
  | { kind: "pending"; pending: PendingLoginView }
  | { kind: "email_verified" }
  | { kind: "action_proof"; proof: string; expiresAt: Date };

/** VerifyOtp: checks a code and does what its purpose says. */
export async function verifyOtp(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal | undefined,
  input: OtpInput & { code: string },
): Promise<VerifyOtpResult> {
  const purpose = requirePurpose(input.purpose);
  new Violations().required("code", input.code, 16).throwIfAny();
  await deps.limiter.hit(null, [["code_verify_ip", meta.ipAddress ?? "unknown"]]);
  const now = deps.clock.now();

  let workspace: WorkspaceRow;
  let userId: string | undefined;
  let pendingId: string | undefined;
  // A wrong code for a named address costs a transaction when the address has an account and
  // nothing when it has none; the refusal waits out the same floor as the sending flows.
  let evenOut: (() => Promise<void>) | undefined;
  if (purpose === "login_second_step") {
    const pending = await livePendingLogin(deps, input.pendingLoginId);
    if (pending.step !== "email") throw new NotFoundError("pending login not found or expired");
    workspace = (await findWorkspaceById(deps.pool, pending.workspace_id)) as WorkspaceRow;
    userId = pending.user_id;
    pendingId = pending.id;
  } else if (
    purpose === "sensitive_action" ||
    (purpose === "email_verification" && principal && input.email === "")
  ) {
    if (!principal)
      throw new UnauthenticatedError(
        "UNAUTHENTICATED",
        "send `authorization: Bearer <access token>`",
      );
    workspace = (await findWorkspaceById(deps.pool, principal.workspaceId)) as WorkspaceRow;
    userId = principal.userId;
  } else {
    evenOut = answerFloor();
    new Violations().email("email", input.email).throwIfAny();
    workspace = await lookUpWorkspace(deps.pool, {
      workspaceId: input.workspaceId,
      workspaceSlug: input.workspaceSlug,
      header: meta.workspaceHeader,
    });
    userId = (await findUserByEmail(deps.pool, input.email))?.id;
  }
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (purpose === "passwordless_sign_in" && !settings.passwordless_otp)
    throw new NotFoundError("sign-in with a code is disabled");
  if (purpose === "email_verification" && settings.email_verification === "off") {
    throw new NotFoundError("email verification is disabled");
  }
  if (!userId) {
    await evenOut?.();
    throw codeInvalid();
  }
  const uid = userId;

  const outcome = await withTenant(deps.pool, workspace.id, async (tx) => {
    const r = await consumeCode(tx, {
      tokenSecret: deps.tokenSecret,
      workspaceId: workspace.id,
      userId: uid,
      purpose,
      code: input.code,
      now,
    });
    await audit(tx, deps, meta, {
      type: r.ok ? "otp_verified" : "otp_failed",
      workspaceId: workspace.id,
      userId: uid,
      outcome: r.ok ? "success" : "failure",
      details: { purpose },
    });
    if (!r.ok) return undefined;
    if (purpose === "email_verification") {
      await markEmailVerified(tx, uid);
      await audit(tx, deps, meta, {
        type: "email_verified",
        workspaceId: workspace.id,
        userId: uid,
        outcome: "success",
      });
      return { kind: "email_verified" as const };
    }
    if (purpose === "sensitive_action") {
      return {
        kind: "action_proof" as const,
        ...(await issueActionProof(tx, deps, workspace.id, uid)),
      };
    }
    if (pendingId) {
      const draft = await finishPendingLogin(tx, deps, meta, {
        pending: { id: pendingId, workspace_id: workspace.id, user_id: uid },
        step: "email",
        method: "email",
        settings,
      });
      return draft && { kind: "draft" as const, draft };
    }
    const user = await findUserById(tx, uid);
    const membership = await findMembership(tx, workspace.id, uid);
    if (!user || user.blocked || membership?.status !== "active") return undefined;
    const next = await mailboxSignIn(tx, deps, meta, {
      workspace,
      user,
      role: membership.role,
      settings,
    });
    if (next.kind === "pending") return next;
    const draft = next.draft;
    await audit(tx, deps, meta, {
      type: "login_succeeded",
      workspaceId: workspace.id,
      userId: uid,
      sessionId: draft.sessionId,
      outcome: "success",
      details: { method: purpose },
    });
    return { kind: "draft" as const, draft };
  });
  if (!outcome) {
    await evenOut?.();
    throw codeInvalid();
  }
  if (outcome.kind === "draft")
    return { kind: "tokens", tokens: await signTokens(deps, outcome.draft) };
  if (outcome.kind === "pending") deps.mail.wake();
  return outcome;
}
