import { withTenant } from "../db/with-tenant.js";
import { UnauthenticatedError } from "../errors.js";
import { findMembership } from "../repositories/memberships.js";
import { findUserByEmail, findUserById } from "../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../repositories/workspaces.js";
import { audit } from "./audit.js";
import { consumeLink, issueCode } from "./codes.js";
import type { AuthDeps, RequestMeta } from "./deps.js";
import { appLink } from "./links.js";
import type { LoginResult } from "./login.js";
import { mailboxSignIn } from "./otp.js";
import { answerFloor, startEmailFlow } from "./public-flow.js";
import { signTokens } from "./sessions.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";

const magicLinkTtlSeconds = 15 * 60;

/** RequestMagicLink: the same answer whether or not the address has an account there. */
export async function requestMagicLink(
  deps: AuthDeps,
  meta: RequestMeta,
  input: { email: string; workspaceId: string; workspaceSlug: string },
): Promise<void> {
  const evenOut = answerFloor();
  const { workspace } = await startEmailFlow(deps, meta, input, {
    enabled: (s) => s.magic_link,
    name: "sign-in by magic link",
    limits: ["magic_link_ip", "magic_link_address"],
  });
  const sent = await withTenant(deps.pool, workspace.id, async (tx) => {
    const user = await findUserByEmail(tx, input.email);
    const membership = user ? await findMembership(tx, workspace.id, user.id) : null;
    if (!user || user.blocked || !membership || membership.status !== "active") return false;
    const { secret } = await issueCode(tx, {
      tokenSecret: deps.tokenSecret,
      workspaceId: workspace.id,
      userId: user.id,
      purpose: "magic_link",
      kind: "link",
      now: deps.clock.now(),
      ttlSeconds: magicLinkTtlSeconds,
    });
    await deps.mail.enqueue(tx, {
      workspaceId: workspace.id,
      to: user.email,
      template: "magic_link",
      vars: {
        email: user.email,
        workspace: workspace.name,
        minutes: String(magicLinkTtlSeconds / 60),
        link: appLink(deps.settings.publicUrl, "magic-link", secret),
      },
    });
    await audit(tx, deps, meta, {
      type: "magic_link_sent",
      workspaceId: workspace.id,
      userId: user.id,
      outcome: "success",
    });
    return true;
  });
  if (sent) deps.mail.wake();
  await evenOut();
}

/** ConsumeMagicLink: once, for tokens; clicking the link also proves the address. */
export async function consumeMagicLink(
  deps: AuthDeps,
  meta: RequestMeta,
  token: string,
): Promise<LoginResult> {
  new Violations().required("token", token, 100).throwIfAny();
  await deps.limiter.hit(null, [["code_verify_ip", meta.ipAddress ?? "unknown"]]);
  const invalid = () =>
    new UnauthenticatedError("CODE_INVALID", "the link is invalid or has expired");
  const now = deps.clock.now();
  const outcome = await deps.pool.transaction(async (tx) => {
    const r = await consumeLink(tx, {
      tokenSecret: deps.tokenSecret,
      purpose: "magic_link",
      token,
      now,
    });
    if (!r.ok) return undefined;
    const workspace = (await findWorkspaceById(tx, r.workspaceId)) as WorkspaceRow;
    const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
    const user = await findUserById(tx, r.userId);
    const membership = await findMembership(tx, r.workspaceId, r.userId);
    // A link issued before the flow was switched off, or before a block, no longer works.
    if (
      !settings.magic_link ||
      !user ||
      user.blocked ||
      !membership ||
      membership.status !== "active"
    ) {
      return undefined;
    }
    const next = await mailboxSignIn(tx, deps, meta, {
      workspace,
      user,
      role: membership.role,
      settings,
    });
    if (next.kind === "pending") return next;
    const issued = next.draft;
    await audit(tx, deps, meta, {
      type: "magic_link_used",
      workspaceId: r.workspaceId,
      userId: r.userId,
      sessionId: issued.sessionId,
      outcome: "success",
    });
    return next;
  });
  if (!outcome) throw invalid();
  if (outcome.kind === "pending") {
    deps.mail.wake();
    return outcome;
  }
  return { kind: "tokens", tokens: await signTokens(deps, outcome.draft) };
}
