import type { DatabaseTransactionConnection } from "slonik";
import { asService, withTenant } from "../db/with-tenant.js";
import { findMembership } from "../repositories/memberships.js";
import { revokeUserSessions } from "../repositories/sessions.js";
import {
  findUserByEmail,
  findUserById,
  insertUser,
  markEmailVerified,
  setPasswordHash,
  type UserRow,
} from "../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../repositories/workspaces.js";
import { audit } from "./audit.js";
import { consumeLink, issueCode, peekLink } from "./codes.js";
import type { AuthDeps, RequestMeta } from "./deps.js";
import { UnauthenticatedError } from "./errors.js";
import { appLink } from "./links.js";
import { type IssuedTokens, openSession, signTokens } from "./sessions.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";

const invitationTtlSeconds = 7 * 86_400;

/**
 * The user an invitation by email is for: the account with that address, or a new one
 * without a password. A new account, or one whose password nobody tied to the mailbox, is
 * emailed a link to AcceptInvitation, which sets the password and proves the address. Runs
 * in the caller's tenant transaction; the caller adds the membership, then marks it claimed
 * when `claimed` (SECURITY.md 28).
 */
export async function userForInvitation(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  input: { workspace: Pick<WorkspaceRow, "id" | "name">; email: string },
): Promise<{ user: UserRow; invited: boolean; claimed: boolean }> {
  const existing = await findUserByEmail(tx, input.email);
  if (existing) return inviteUnproven(tx, deps, { ...input, user: existing });
  const user =
    (await insertUser(tx, { email: input.email, passwordHash: null })) ??
    (await findUserByEmail(tx, input.email));
  if (!user) throw new Error("user vanished while being invited");
  await sendInvitation(tx, deps, { workspace: input.workspace, user });
  return { user, invited: true, claimed: false };
}

/**
 * An existing account joins as it is when its password is proven; otherwise its membership is
 * a claim and the owner is invited, so that only whoever reads the mailbox gets in.
 */
export async function inviteUnproven(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  input: { workspace: Pick<WorkspaceRow, "id" | "name">; user: UserRow },
): Promise<{ user: UserRow; invited: boolean; claimed: boolean }> {
  if (input.user.password_proven_at !== null)
    return { user: input.user, invited: false, claimed: false };
  await sendInvitation(tx, deps, input);
  return { user: input.user, invited: true, claimed: true };
}

async function sendInvitation(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  input: { workspace: Pick<WorkspaceRow, "id" | "name">; user: UserRow },
): Promise<void> {
  const { user } = input;
  const { secret } = await issueCode(tx, {
    tokenSecret: deps.tokenSecret,
    workspaceId: input.workspace.id,
    userId: user.id,
    purpose: "invitation",
    kind: "link",
    now: deps.clock.now(),
    ttlSeconds: invitationTtlSeconds,
  });
  await deps.mail.enqueue(tx, {
    workspaceId: input.workspace.id,
    to: user.email,
    template: "invitation",
    vars: {
      email: user.email,
      workspace: input.workspace.name,
      days: String(invitationTtlSeconds / 86_400),
      link: appLink(deps.settings.publicUrl, "accept-invitation", secret),
    },
  });
}

/** AcceptInvitation: sets the password, proves the address, and signs in; once. */
export async function acceptInvitation(
  deps: AuthDeps,
  meta: RequestMeta,
  input: { token: string; password: string },
): Promise<IssuedTokens> {
  new Violations()
    .required("token", input.token, 100)
    .required("password", input.password, 4096)
    .throwIfAny();
  await deps.limiter.hit(null, [["code_verify_ip", meta.ipAddress ?? "unknown"]]);
  const invalid = () =>
    new UnauthenticatedError("CODE_INVALID", "the invitation is invalid, used or expired");
  const now = deps.clock.now();
  // Look without using it: the password policy may still refuse the password.
  const peek = await peekLink(deps.pool, {
    tokenSecret: deps.tokenSecret,
    purpose: "invitation",
    token: input.token,
    now,
  });
  if (!peek.ok) throw invalid();
  const workspace = (await findWorkspaceById(deps.pool, peek.workspaceId)) as WorkspaceRow;
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  deps.policy.check(input.password, { minLength: settings.password_min_length, field: "password" });
  const hash = await deps.hasher.hash(input.password);
  const draft = await withTenant(deps.pool, workspace.id, async (tx) => {
    const r = await consumeLink(tx, {
      tokenSecret: deps.tokenSecret,
      purpose: "invitation",
      token: input.token,
      now,
    });
    if (!r.ok || r.workspaceId !== workspace.id) return undefined;
    const user = await findUserById(tx, r.userId);
    const membership = await findMembership(tx, workspace.id, r.userId);
    if (!user || user.blocked || membership?.status !== "active") return undefined;
    // The mailbox's reader sets the password: it is proven, and whatever was set up before
    // (another's password, their sessions) ends everywhere (SECURITY.md 28).
    await setPasswordHash(tx, user.id, hash, null, now);
    await asService(tx, () =>
      revokeUserSessions(tx, { userId: user.id, reason: "invitation_accepted", now }),
    );
    if (!user.email_verified) await markEmailVerified(tx, user.id);
    const opened = await openSession(tx, deps, meta, {
      workspaceId: workspace.id,
      userId: user.id,
      role: membership.role,
      settings,
    });
    await audit(tx, deps, meta, {
      type: "invitation_accepted",
      workspaceId: workspace.id,
      userId: user.id,
      sessionId: opened.sessionId,
      outcome: "success",
    });
    return opened;
  });
  if (!draft) throw invalid();
  await deps.revocations.changed();
  return signTokens(deps, draft);
}
