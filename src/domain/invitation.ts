import type { DatabaseTransactionConnection } from "slonik";
import { asService, withTenant } from "../db/with-tenant.js";
import { UnauthenticatedError } from "../errors.js";
import { lockWorkspace } from "../repositories/admin-workspaces.js";
import {
  activateInvitedMembership,
  ensureMembership,
  findMembership,
} from "../repositories/memberships.js";
import { revokeSessions } from "../repositories/sessions.js";
import {
  findUserByEmail,
  findUserById,
  insertUser,
  setPasswordHash,
  type UserRow,
} from "../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../repositories/workspaces.js";
import { audit } from "./audit.js";
import { consumeLink, issueCode, peekLink } from "./codes.js";
import type { AuthDeps, RequestMeta } from "./deps.js";
import { appLink } from "./links.js";
import type { LoginResult } from "./login.js";
import { mailboxSignIn } from "./otp.js";
import { strictestPolicy } from "./recovery.js";
import { signTokens } from "./sessions.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";

export const invitationTtlSeconds = 7 * 86_400;

/**
 * The account an address names: the existing one, or a new one without a password (its
 * owner sets one when accepting the invitation). Runs in the caller's tenant transaction.
 */
export async function accountForAddress(
  tx: DatabaseTransactionConnection,
  email: string,
): Promise<{ user: UserRow; created: boolean }> {
  const existing = await findUserByEmail(tx, email);
  if (existing) return { user: existing, created: false };
  const inserted = await insertUser(tx, { email, passwordHash: null });
  if (inserted) return { user: inserted, created: true };
  // A concurrent insert of the same address won: that account is the one.
  const winner = await findUserByEmail(tx, email);
  if (!winner) throw new Error("user vanished while being invited");
  return { user: winner, created: false };
}

/** How an account joins a workspace (see `joinWorkspace`). */
export interface Joining {
  /** The membership is an invitation, which opens nothing until the owner accepts it. */
  readonly invited: boolean;
  /** The address is emailed a link to AcceptInvitation. */
  readonly mailed: boolean;
  /** Mark the membership claimed: the account's earlier password does not open it (28). */
  readonly claimed: boolean;
}

/**
 * How an account comes into a workspace, and the mail that goes with it. A workspace's own
 * callers only invite (SECURITY.md 30): the membership waits for the owner's consent, and the
 * answer is the same for a new address and for an account from elsewhere. A deployment admin
 * adds at once; an account with a password nobody tied to the mailbox is then a claim, and its
 * owner is emailed the link to prove the address (SECURITY.md 28), as a new account is to set
 * its password. The caller inserts the membership as told, then calls `sendInvitation` when
 * `mailed`.
 */
export function joining(input: {
  user: UserRow;
  created: boolean;
  byDeployment: boolean;
}): Joining {
  if (!input.byDeployment) return { invited: true, mailed: true, claimed: false };
  if (input.created) return { invited: false, mailed: true, claimed: false };
  if (input.user.password_proven_at !== null)
    return { invited: false, mailed: false, claimed: false };
  return { invited: false, mailed: true, claimed: true };
}

/** Emails the address a link to AcceptInvitation for this workspace (it replaces earlier ones). */
export async function sendInvitation(
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

/**
 * AcceptInvitation: the invited account joins (its membership becomes active), the address is
 * proven, and the session opens under the workspace's rules; once. A password is required
 * unless the account already has one that was proven; a new one must meet the strictest
 * policy of the account's workspaces, and ends whatever was set up before (another's password,
 * their sessions) everywhere (SECURITY.md 28).
 */
export async function acceptInvitation(
  deps: AuthDeps,
  meta: RequestMeta,
  input: { token: string; password: string },
): Promise<LoginResult> {
  const v = new Violations().required("token", input.token, 100);
  if (input.password.length > 4096) v.add("password", "is longer than 4096 characters");
  v.throwIfAny();
  await deps.limiter.hit(null, [["code_verify_ip", meta.ipAddress ?? "unknown"]]);
  const invalid = () =>
    new UnauthenticatedError("CODE_INVALID", "the invitation is invalid, used or expired");
  const now = deps.clock.now();
  // Look without using it: the password policy may still refuse the password.
  // An invitation from the workspace, or a link to join it that SignUp mailed an account
  // that already existed.
  let purpose: "invitation" | "join" = "invitation";
  let peek = await peekLink(deps.pool, {
    tokenSecret: deps.tokenSecret,
    purpose,
    token: input.token,
    now,
  });
  if (!peek.ok) {
    purpose = "join";
    peek = await peekLink(deps.pool, {
      tokenSecret: deps.tokenSecret,
      purpose,
      token: input.token,
      now,
    });
  }
  if (!peek.ok) throw invalid();
  const workspace = (await findWorkspaceById(deps.pool, peek.workspaceId)) as WorkspaceRow;
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  const account = await findUserById(deps.pool, peek.userId);
  if (!account) throw invalid();
  let hash: string | null = null;
  if (input.password === "") {
    if (account.password_proven_at === null || account.password_hash === null)
      new Violations().add("password", "is required: choose this account's password").throwIfAny();
  } else {
    const policy = await strictestPolicy(deps.pool, deps, account.id, workspace);
    deps.policy.check(input.password, { minLength: policy.minLength, field: "password" });
    hash = await deps.hasher.hash(input.password);
  }
  const outcome = await withTenant(deps.pool, workspace.id, async (tx) => {
    // Membership changes of a workspace take its row lock first (AdminService): taking it
    // here too orders this acceptance with a concurrent RemoveMember or UpdateMember, so the
    // session opened below is either seen and ended by them or refused (and the two cannot
    // deadlock over the membership and code rows).
    if (!(await lockWorkspace(tx, workspace.id))) return undefined;
    const r = await consumeLink(tx, {
      tokenSecret: deps.tokenSecret,
      purpose,
      token: input.token,
      now,
    });
    if (!r.ok || r.workspaceId !== workspace.id || r.userId !== account.id) return undefined;
    const user = await findUserById(tx, r.userId);
    let membership = await findMembership(tx, workspace.id, r.userId);
    // Joining by SignUp's link: the workspace must still be open to sign-up.
    if (purpose === "join" && !membership && settings.signup)
      membership = await ensureMembership(tx, {
        workspaceId: workspace.id,
        userId: r.userId,
        role: "member",
      });
    if (!user || user.blocked || !membership || membership.status === "disabled") return undefined;
    // The password was checked as proven before the hash; it must still be the same one.
    if (hash === null && user.password_hash !== account.password_hash) return undefined;
    if (membership.status === "invited") await activateInvitedMembership(tx, workspace.id, user.id);
    if (hash !== null) {
      await setPasswordHash(tx, user.id, hash, null, now);
      await asService(tx, () =>
        revokeSessions(tx, {
          userId: user.id,
          workspaceId: null,
          reason: "invitation_accepted",
          now,
        }),
      );
    }
    // The link is an emailed factor, as a magic link is: no emailed second step after it, but
    // a factor of the workspace where it asks for one.
    const next = await mailboxSignIn(tx, deps, meta, {
      workspace,
      user,
      role: membership.role,
      settings,
    });
    const opened = next.kind === "draft" ? next.draft : undefined;
    await audit(tx, deps, meta, {
      type: "invitation_accepted",
      workspaceId: workspace.id,
      userId: user.id,
      sessionId: opened?.sessionId ?? null,
      outcome: "success",
      details: { password_set: hash !== null, ...(purpose === "join" ? { joined: true } : {}) },
    });
    return next;
  });
  if (!outcome) throw invalid();
  await deps.revocations.changed();
  if (outcome.kind === "pending") {
    deps.mail.wake();
    return outcome;
  }
  return { kind: "tokens", tokens: await signTokens(deps, outcome.draft) };
}
