import { withTenant } from "../db/with-tenant.js";
import { findMembership } from "../repositories/memberships.js";
import { findUserByEmail, normalizeEmail, setPasswordHash } from "../repositories/users.js";
import { audit } from "./audit.js";
import type { AuthDeps, RequestMeta } from "./deps.js";
import { FailedPreconditionError, PermissionDeniedError, UnauthenticatedError } from "./errors.js";
import { needsSecondStep, startSecondStep } from "./otp.js";
import { type IssuedTokens, openSession, signTokens } from "./sessions.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";
import { lookUpWorkspace } from "./workspace-lookup.js";

export type LoginResult =
  | { kind: "tokens"; tokens: IssuedTokens }
  | { kind: "pending"; pending: { pendingLoginId: string; expiresAt: Date } };

const invalidCredentials = () =>
  new UnauthenticatedError("INVALID_CREDENTIALS", "invalid email or password");

/**
 * Email and password in a workspace. Unknown addresses cost one password hash like known
 * ones, and unknown, blocked and wrong-password answers are identical (SECURITY.md 17).
 * Membership and email verification are told only after the password checked out.
 */
export async function login(
  deps: AuthDeps,
  meta: RequestMeta,
  input: { email: string; password: string; workspaceId: string; workspaceSlug: string },
): Promise<LoginResult> {
  new Violations()
    .email("email", input.email)
    .required("password", input.password, 4096)
    .throwIfAny();
  const workspace = await lookUpWorkspace(deps.pool, {
    workspaceId: input.workspaceId,
    workspaceSlug: input.workspaceSlug,
    header: meta.workspaceHeader,
  });
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  await deps.limiter.hit({ id: workspace.id, settings }, [
    ["login_ip", meta.ipAddress ?? "unknown"],
    ["login_account", normalizeEmail(input.email)],
  ]);
  // Before any password work: a locked address costs nothing and says nothing more.
  await deps.lockout.assertNotLocked(input.email);
  const user = await findUserByEmail(deps.pool, input.email);
  const check = await deps.hasher.verify(input.password, user?.password_hash ?? null);
  if (!user || !check.ok || user.blocked) {
    await deps.lockout.recordFailure(input.email);
    await withTenant(deps.pool, workspace.id, (tx) =>
      audit(tx, deps, meta, {
        type: "login_failed",
        workspaceId: workspace.id,
        userId: user?.id ?? null,
        outcome: "failure",
        details: {
          reason: !user ? "unknown_email" : user.blocked && check.ok ? "blocked" : "wrong_password",
        },
      }),
    );
    throw invalidCredentials();
  }
  await deps.lockout.clear(input.email);
  const outcome = await withTenant(deps.pool, workspace.id, async (tx) => {
    const membership = await findMembership(tx, workspace.id, user.id);
    if (!membership || membership.status !== "active") {
      throw new PermissionDeniedError(
        "MEMBERSHIP_INACTIVE",
        "no active membership in this workspace",
      );
    }
    if (settings.require_email_verification && !user.email_verified) {
      throw new FailedPreconditionError(
        "EMAIL_NOT_VERIFIED",
        "verify your email address before logging in",
      );
    }
    if (check.needsRehash)
      await setPasswordHash(tx, user.id, await deps.hasher.hash(input.password), null);
    if (needsSecondStep(settings, user)) {
      return {
        kind: "pending" as const,
        pending: await startSecondStep(tx, deps, meta, { workspace, user, settings }),
      };
    }
    const draft = await openSession(tx, deps, meta, {
      workspaceId: workspace.id,
      userId: user.id,
      role: membership.role,
      settings,
    });
    await audit(tx, deps, meta, {
      type: "login_succeeded",
      workspaceId: workspace.id,
      userId: user.id,
      sessionId: draft.sessionId,
      outcome: "success",
    });
    return { kind: "draft" as const, draft };
  });
  if (outcome.kind === "pending") {
    deps.mail.wake();
    return outcome;
  }
  return { kind: "tokens", tokens: await signTokens(deps, outcome.draft) };
}
