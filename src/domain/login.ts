import { withTenant } from "../db/with-tenant.js";
import { FailedPreconditionError, NotFoundError, UnauthenticatedError } from "../errors.js";
import { claimPending, findMembership } from "../repositories/memberships.js";
import { findUserForLogin, normalizeEmail, setPasswordHash } from "../repositories/users.js";
import { audit } from "./audit.js";
import type { AuthDeps, RequestMeta } from "./deps.js";
import { guessSubject } from "./lockout.js";
import { sessionOrPending } from "./otp.js";
import type { PendingLoginView } from "./second-step.js";
import { type IssuedTokens, signTokens } from "./sessions.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";
import { lookUpWorkspace } from "./workspace-lookup.js";

export type LoginResult =
  | { kind: "tokens"; tokens: IssuedTokens }
  | { kind: "pending"; pending: PendingLoginView };

const invalidCredentials = () =>
  new UnauthenticatedError("INVALID_CREDENTIALS", "invalid email or password");

/**
 * Email and password in a workspace. Only an active member's attempt checks the account's
 * password and counts against it (deployment-wide); an address without an account or without
 * an active membership here still costs one password hash, is counted against this
 * workspace and address only, and answers exactly as a wrong password does (SECURITY.md 17,
 * 33). Each attempt is reserved before the hash, so concurrent guesses get at most the lockout
 * threshold of real checks. Email verification is told only after the password checked out.
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
  if (settings.passwordless_only)
    throw new NotFoundError("password login is disabled", "FLOW_DISABLED");
  const scope = { id: workspace.id, settings };
  const found = await findUserForLogin(deps.pool, workspace.id, input.email);
  const user = found?.role ? found.user : null;
  await deps.limiter.hit(scope, [["login_ip", meta.ipAddress ?? "unknown"]]);
  await deps.limiter.hit(user ? null : scope, [["login_account", normalizeEmail(input.email)]]);
  const subject = guessSubject(input.email, user ? null : workspace.id);
  // Before any password work: a locked subject costs nothing and says nothing more.
  await deps.lockout.reserve(subject);
  const check = await deps.hasher.verify(input.password, user?.password_hash ?? null);
  if (!user || !check.ok || user.blocked) {
    await withTenant(deps.pool, workspace.id, (tx) =>
      audit(tx, deps, meta, {
        type: "login_failed",
        workspaceId: workspace.id,
        // A's audit log names only A's members, and never tells whether an address exists.
        userId: user?.id ?? null,
        outcome: "failure",
        details: {
          reason: !user ? "no_member" : user.blocked && check.ok ? "blocked" : "wrong_password",
        },
      }),
    );
    throw invalidCredentials();
  }
  const outcome = await withTenant(deps.pool, workspace.id, async (tx) => {
    const membership = await findMembership(tx, workspace.id, user.id);
    // Removed or disabled since the lookup above.
    if (membership?.status !== "active") throw invalidCredentials();
    if (settings.require_email_verification && !user.email_verified && !membership.email_verified) {
      throw new FailedPreconditionError(
        "EMAIL_NOT_VERIFIED",
        "verify your email address before logging in",
      );
    }
    if (claimPending(membership, user)) {
      throw new FailedPreconditionError(
        "EMAIL_NOT_VERIFIED",
        "prove your address for this workspace first: accept its invitation or reset your password",
      );
    }
    if (check.needsRehash)
      await setPasswordHash(tx, user.id, await deps.hasher.hash(input.password), null);
    const next = await sessionOrPending(tx, deps, meta, {
      workspace,
      user,
      role: membership.role,
      settings,
      amr: ["pwd"],
    });
    if (next.kind === "pending") return next;
    const draft = next.draft;
    await audit(tx, deps, meta, {
      type: "login_succeeded",
      workspaceId: workspace.id,
      userId: user.id,
      sessionId: draft.sessionId,
      outcome: "success",
    });
    return { kind: "draft" as const, draft };
  }).catch(async (error: unknown) => {
    // The password was right; what refused the login (an unverified address) was not a guess.
    await deps.lockout.clear(subject);
    throw error;
  });
  // The password checked out, but a factor of the membership is still to come: the count
  // stays, so that guesses at the factor and fresh password logins add up to one lockout
  // (VerifyFactor clears it on success).
  const factorNext = outcome.kind === "pending" && !outcome.pending.factors.includes("email_code");
  if (!factorNext) await deps.lockout.clear(subject);
  if (outcome.kind === "pending") {
    deps.mail.wake();
    return outcome;
  }
  return { kind: "tokens", tokens: await signTokens(deps, outcome.draft) };
}
