import type { DatabaseTransactionConnection } from "slonik";
import { withTenant } from "../db/with-tenant.js";
import { NotFoundError, UnauthenticatedError } from "../errors.js";
import { findMembership } from "../repositories/memberships.js";
import {
  findUserByEmail,
  findUserById,
  markEmailVerified,
  normalizeEmail,
  type UserRow,
} from "../repositories/users.js";
import type { WorkspaceRow } from "../repositories/workspaces.js";
import { audit } from "./audit.js";
import { consumeCode, consumeLink, issueCode } from "./codes.js";
import type { AuthDeps, Principal, RequestMeta } from "./deps.js";
import { appLink } from "./links.js";
import { answerFloor } from "./public-flow.js";
import { effectiveSettings } from "./settings.js";
import { Violations } from "./validate.js";
import { lookUpWorkspace } from "./workspace-lookup.js";

const verificationTtlSeconds = { code: 10 * 60, link: 24 * 60 * 60 } as const;
const codeInvalid = () =>
  new UnauthenticatedError("CODE_INVALID", "the code or link is invalid or has expired");

/** Issues a verification code or link and queues its email, in the caller's transaction. */
export async function sendVerification(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  input: {
    workspace: Pick<WorkspaceRow, "id" | "name">;
    user: Pick<UserRow, "id" | "email">;
    mode: "code" | "link";
  },
): Promise<void> {
  const ttl = verificationTtlSeconds[input.mode];
  const { secret } = await issueCode(tx, {
    tokenSecret: deps.tokenSecret,
    workspaceId: input.workspace.id,
    userId: input.user.id,
    purpose: "email_verification",
    kind: input.mode,
    now: deps.clock.now(),
    ttlSeconds: ttl,
  });
  const common = {
    email: input.user.email,
    workspace: input.workspace.name,
    minutes: String(Math.round(ttl / 60)),
  };
  await deps.mail.enqueue(tx, {
    workspaceId: input.workspace.id,
    to: input.user.email,
    template: input.mode === "code" ? "verify_email_code" : "verify_email_link",
    vars:
      input.mode === "code"
        ? { ...common, code: secret }
        : { ...common, link: appLink(deps.settings.publicUrl, "verify-email", secret) },
  });
  await audit(tx, deps, meta, {
    type: "email_verification_sent",
    workspaceId: input.workspace.id,
    userId: input.user.id,
    outcome: "success",
    details: { mode: input.mode },
  });
}

/**
 * SendEmailVerification: for the signed-in caller's address, or for an email in a workspace
 * (answered the same whether or not it has an account there).
 */
export async function requestEmailVerification(
  deps: AuthDeps,
  meta: RequestMeta,
  input: {
    principal: Principal | undefined;
    email: string;
    workspaceId: string;
    workspaceSlug: string;
  },
): Promise<void> {
  // For a named address, a known one writes a code and an outbox row before the answer; both
  // wait out the floor of the other sending flows. A signed-in caller's own address needs none.
  const evenOut = input.principal ? undefined : answerFloor();
  if (!input.principal) new Violations().email("email", input.email).throwIfAny();
  const workspace = await lookUpWorkspace(deps.pool, {
    workspaceId: input.principal?.workspaceId ?? input.workspaceId,
    workspaceSlug: input.principal ? "" : input.workspaceSlug,
    header: meta.workspaceHeader,
  });
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  if (settings.email_verification === "off")
    throw new NotFoundError("email verification is disabled");
  await deps.limiter.hit({ id: workspace.id, settings }, [
    [
      "verification_address",
      input.principal ? `user:${input.principal.userId}` : normalizeEmail(input.email),
    ],
  ]);
  const mode = settings.email_verification;
  const sent = await withTenant(deps.pool, workspace.id, async (tx) => {
    const user = input.principal
      ? await findUserById(tx, input.principal.userId)
      : await findUserByEmail(tx, input.email);
    if (!user || user.email_verified || user.blocked) return false;
    const membership = await findMembership(tx, workspace.id, user.id);
    if (membership?.status !== "active") return false;
    await sendVerification(tx, deps, meta, { workspace, user, mode });
    return true;
  });
  if (sent) deps.mail.wake();
  await evenOut?.();
}

/** VerifyEmail: a link token, or an email with its code in a workspace. */
export async function verifyEmail(
  deps: AuthDeps,
  meta: RequestMeta,
  input:
    | { token: string }
    | { email: string; code: string; workspaceId: string; workspaceSlug: string },
): Promise<void> {
  const now = deps.clock.now();
  await deps.limiter.hit(null, [["code_verify_ip", meta.ipAddress ?? "unknown"]]);
  if ("token" in input) {
    new Violations().required("token", input.token, 100).throwIfAny();
    const result = await deps.pool.transaction(async (tx) => {
      const r = await consumeLink(tx, {
        tokenSecret: deps.tokenSecret,
        purpose: "email_verification",
        token: input.token,
        now,
      });
      if (!r.ok) return r;
      await markEmailVerified(tx, r.userId);
      await audit(tx, deps, meta, {
        type: "email_verified",
        workspaceId: r.workspaceId,
        userId: r.userId,
        outcome: "success",
      });
      return r;
    });
    if (!result.ok) throw codeInvalid();
    return;
  }
  // A wrong code costs a transaction for a known address and nothing for an unknown one; the
  // refusal waits out the floor of the sending flows.
  const evenOut = answerFloor();
  new Violations()
    .email("code.email", input.email)
    .required("code.code", input.code, 16)
    .throwIfAny();
  const workspace = await lookUpWorkspace(deps.pool, {
    workspaceId: input.workspaceId,
    workspaceSlug: input.workspaceSlug,
    header: meta.workspaceHeader,
    field: "code.workspace_id",
  });
  const result = await withTenant(deps.pool, workspace.id, async (tx) => {
    const user = await findUserByEmail(tx, input.email);
    if (!user) return { ok: false as const };
    const r = await consumeCode(tx, {
      tokenSecret: deps.tokenSecret,
      workspaceId: workspace.id,
      userId: user.id,
      purpose: "email_verification",
      code: input.code,
      now,
    });
    await audit(tx, deps, meta, {
      type: r.ok ? "email_verified" : "email_verification_failed",
      workspaceId: workspace.id,
      userId: user.id,
      outcome: r.ok ? "success" : "failure",
    });
    if (r.ok) await markEmailVerified(tx, user.id);
    return r;
  });
  if (!result.ok) {
    await evenOut();
    throw codeInvalid();
  }
}
