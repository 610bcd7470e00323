import type { CommonQueryMethods, DatabaseTransactionConnection } from "slonik";
import { asService, withTenant } from "../db/with-tenant.js";
import { NotFoundError, PermissionDeniedError, UnauthenticatedError } from "../errors.js";
import { findMembership, listActiveMembershipsOfUser } from "../repositories/memberships.js";
import { revokeSessions } from "../repositories/sessions.js";
import {
  findUserByEmail,
  findUserById,
  setPasswordHash,
  type UserRow,
} from "../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../repositories/workspaces.js";
import { consumeActionProof } from "./action-proofs.js";
import { audit } from "./audit.js";
import { type ConsumeResult, consumeCode, consumeLink, issueCode, peekLink } from "./codes.js";
import type { AuthDeps, Principal, RequestMeta } from "./deps.js";
import { appLink } from "./links.js";
import { guessSubject } from "./lockout.js";
import { answerFloor, startEmailFlow } from "./public-flow.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";
import { lookUpWorkspace } from "./workspace-lookup.js";

const resetTtlSeconds = { code: 10 * 60, link: 60 * 60 } as const;

async function queuePasswordChangedNotice(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  workspace: Pick<WorkspaceRow, "id" | "name">,
  user: Pick<UserRow, "email">,
): Promise<void> {
  await deps.mail.enqueue(tx, {
    workspaceId: workspace.id,
    to: user.email,
    template: "password_changed",
    vars: { email: user.email, workspace: workspace.name, time: deps.clock.now().toISOString() },
  });
}

/**
 * ChangePassword: the current password is required and counts like a login (limit and
 * lockout); the new one must meet the strictest policy among the account's workspaces, and is
 * checked first, so that its refusal tells nothing about the current one. The user's other
 * sessions end (in every workspace) and a notice is emailed (SECURITY.md 4, 31, 33).
 */
export async function changePassword(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal,
  input: { currentPassword: string; newPassword: string; actionProof: string },
): Promise<void> {
  new Violations()
    .required("current_password", input.currentPassword, 4096)
    .required("new_password", input.newPassword, 4096)
    .throwIfAny();
  const workspace = await findWorkspaceById(deps.pool, principal.workspaceId);
  const user = await findUserById(deps.pool, principal.userId);
  if (!workspace || !user)
    throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended");
  const policy = await strictestPolicy(deps.pool, deps, user.id, workspace);
  deps.policy.check(input.newPassword, { minLength: policy.minLength, field: "new_password" });
  await deps.limiter.hit(null, [["login_account", user.email_normalized]]);
  const subject = guessSubject(user.email, null);
  await deps.lockout.reserve(subject);
  const check = await deps.hasher.verify(input.currentPassword, user.password_hash);
  if (!check.ok) {
    await withTenant(deps.pool, workspace.id, (tx) =>
      audit(tx, deps, meta, {
        type: "password_change_failed",
        workspaceId: workspace.id,
        userId: user.id,
        outcome: "failure",
      }),
    );
    throw new PermissionDeniedError("CURRENT_PASSWORD_INVALID", "the current password is wrong");
  }
  await deps.lockout.clear(subject);
  if (policy.actionProof) await consumeActionProof(deps, principal, input.actionProof);
  const hash = await deps.hasher.hash(input.newPassword);
  await withTenant(deps.pool, workspace.id, async (tx) => {
    const now = deps.clock.now();
    await setPasswordHash(tx, user.id, hash, null);
    const ended = await asService(tx, () =>
      revokeSessions(tx, {
        userId: user.id,
        workspaceId: null,
        reason: "password_changed",
        now,
        exceptSessionId: principal.sessionId,
      }),
    );
    await queuePasswordChangedNotice(tx, deps, workspace, user);
    await audit(tx, deps, meta, {
      type: "password_changed",
      workspaceId: workspace.id,
      userId: user.id,
      sessionId: principal.sessionId,
      outcome: "success",
      details: { sessions_ended: ended.length },
    });
  });
  await deps.revocations.changed();
  deps.mail.wake();
}

/**
 * The strictest password policy among the workspaces the account is an active member of (and
 * the caller's): a password set through one workspace must hold in all of them.
 */
export async function strictestPolicy(
  db: CommonQueryMethods,
  deps: AuthDeps,
  userId: string,
  current: WorkspaceRow,
): Promise<{ minLength: number; actionProof: boolean }> {
  const memberships = await listActiveMembershipsOfUser(db, userId, null, 10_000);
  const all = [current, ...memberships.map((m) => m.workspace)].map((w) =>
    effectiveSettings(w, deps.settings.workspaceDefaults),
  );
  return {
    minLength: Math.max(...all.map((s) => s.password_min_length)),
    actionProof: all.some((s) => s.action_proof_required),
  };
}

/** RequestPasswordReset: the same answer whether or not the address has an account there. */
export async function requestPasswordReset(
  deps: AuthDeps,
  meta: RequestMeta,
  input: { email: string; workspaceId: string; workspaceSlug: string },
): Promise<void> {
  const evenOut = answerFloor();
  const { workspace, settings } = await startEmailFlow(deps, meta, input, {
    enabled: (s) => s.reset_password,
    name: "password reset",
    limits: ["password_reset_ip", "password_reset_address"],
  });
  const mode = settings.password_reset;
  const sent = await withTenant(deps.pool, workspace.id, async (tx) => {
    const user = await findUserByEmail(tx, input.email);
    const membership = user ? await findMembership(tx, workspace.id, user.id) : null;
    if (!user || !membership || membership.status !== "active" || user.blocked) return false;
    const ttl = resetTtlSeconds[mode];
    const { secret } = await issueCode(tx, {
      tokenSecret: deps.tokenSecret,
      workspaceId: workspace.id,
      userId: user.id,
      purpose: "password_reset",
      kind: mode,
      now: deps.clock.now(),
      ttlSeconds: ttl,
    });
    const common = {
      email: user.email,
      workspace: workspace.name,
      minutes: String(Math.round(ttl / 60)),
    };
    await deps.mail.enqueue(tx, {
      workspaceId: workspace.id,
      to: user.email,
      template: mode === "code" ? "password_reset_code" : "password_reset_link",
      vars:
        mode === "code"
          ? { ...common, code: secret }
          : { ...common, link: appLink(deps.settings.publicUrl, "reset-password", secret) },
    });
    await audit(tx, deps, meta, {
      type: "password_reset_requested",
      workspaceId: workspace.id,
      userId: user.id,
      outcome: "success",
      details: { mode },
    });
    return true;
  });
  if (sent) deps.mail.wake();
  await evenOut();
}

/**
 * ResetPassword: with the link token or the emailed code. Ends every session of the user and
 * does not log in (SECURITY.md 4).
 */
export async function resetPassword(
  deps: AuthDeps,
  meta: RequestMeta,
  input:
    | { token: string; newPassword: string }
    | {
        email: string;
        code: string;
        workspaceId: string;
        workspaceSlug: string;
        newPassword: string;
      },
): Promise<void> {
  const v = new Violations().required("new_password", input.newPassword, 4096);
  if ("token" in input) v.required("token", input.token, 100);
  else v.email("code.email", input.email).required("code.code", input.code, 16);
  v.throwIfAny();
  await deps.limiter.hit(null, [["code_verify_ip", meta.ipAddress ?? "unknown"]]);
  const now = deps.clock.now();

  // Find the workspace first: it is flagged on or off there, and sets the password policy.
  let workspace: WorkspaceRow;
  if ("token" in input) {
    // Look without using it: the policy check below may still refuse the new password.
    const peek = await peekLink(deps.pool, {
      tokenSecret: deps.tokenSecret,
      purpose: "password_reset",
      token: input.token,
      now,
    });
    if (!peek.ok) throw codeInvalid();
    workspace = (await findWorkspaceById(deps.pool, peek.workspaceId)) as WorkspaceRow;
  } else {
    workspace = await lookUpWorkspace(deps.pool, {
      workspaceId: input.workspaceId,
      workspaceSlug: input.workspaceSlug,
      header: meta.workspaceHeader,
      field: "code.workspace_id",
    });
  }
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (!settings.reset_password) throw new NotFoundError("password reset is disabled");
  deps.policy.check(input.newPassword, {
    minLength: settings.password_min_length,
    field: "new_password",
  });
  const hash = await deps.hasher.hash(input.newPassword);

  const result = await withTenant(deps.pool, workspace.id, async (tx): Promise<ConsumeResult> => {
    let r: ConsumeResult;
    if ("token" in input) {
      r = await consumeLink(tx, {
        tokenSecret: deps.tokenSecret,
        purpose: "password_reset",
        token: input.token,
        now,
      });
    } else {
      const user = await findUserByEmail(tx, input.email);
      r = user
        ? await consumeCode(tx, {
            tokenSecret: deps.tokenSecret,
            workspaceId: workspace.id,
            userId: user.id,
            purpose: "password_reset",
            code: input.code,
            now,
          })
        : { ok: false, attemptRecorded: false };
    }
    if (!r.ok || r.workspaceId !== workspace.id) return { ok: false, attemptRecorded: false };
    const user = (await findUserById(tx, r.userId)) as UserRow;
    // Now that the code proved the mailbox: the new password must hold in every workspace of
    // the account (a refusal rolls the use of the code back).
    const strictest = await asService(tx, () => strictestPolicy(tx, deps, user.id, workspace));
    deps.policy.check(input.newPassword, { minLength: strictest.minLength, field: "new_password" });
    // Whoever read the reset mail set this password: it is proven (SECURITY.md 28).
    await setPasswordHash(tx, user.id, hash, now, now);
    // A reset concerns the identity: its sessions end in every workspace.
    const ended = await asService(tx, () =>
      revokeSessions(tx, { userId: user.id, workspaceId: null, reason: "password_reset", now }),
    );
    await queuePasswordChangedNotice(tx, deps, workspace, user);
    await audit(tx, deps, meta, {
      type: "password_reset_completed",
      workspaceId: workspace.id,
      userId: user.id,
      outcome: "success",
      details: { sessions_ended: ended.length },
    });
    return r;
  });
  if (!result.ok) throw codeInvalid();
  await deps.revocations.changed();
  deps.mail.wake();
}

const codeInvalid = () =>
  new UnauthenticatedError("CODE_INVALID", "the code or link is invalid or has expired");
