import type { DatabaseTransactionConnection } from "slonik";
import { setTenantWorkspace, withTenant } from "../db/with-tenant.js";
import { AlreadyExistsError, NotFoundError } from "../errors.js";
import { ensureMembership, findMembership } from "../repositories/memberships.js";
import { findUserByEmail, insertUser, normalizeEmail } from "../repositories/users.js";
import {
  findWorkspaceBySlug,
  insertWorkspace,
  type WorkspaceRow,
} from "../repositories/workspaces.js";
import { audit } from "./audit.js";
import { issueCode } from "./codes.js";
import type { AuthDeps, RequestMeta } from "./deps.js";
import { invitationTtlSeconds } from "./invitation.js";
import { appLink } from "./links.js";
import { effectiveSettings } from "./settings.js";
import { slugPattern, Violations } from "./validate.js";
import { sendVerification } from "./verification.js";
import { lookUpWorkspace } from "./workspace-lookup.js";

const raceLost = new Error("sign-up race lost");

export interface SignUpInput {
  readonly email: string;
  readonly password: string;
  readonly workspaceName: string;
  readonly workspaceSlug: string;
}

/**
 * Creates a user with a new workspace (they own it) or a membership in the workspace of the
 * x-workspace-id header. An address that already has an account gets the same answer, costs
 * the same password hash, and its owner is emailed instead (SECURITY.md 17).
 */
export async function signUp(
  deps: AuthDeps,
  meta: RequestMeta,
  input: SignUpInput,
): Promise<{ emailVerificationRequired: boolean }> {
  const creating = input.workspaceName !== "" || input.workspaceSlug !== "";
  const v = new Violations().email("email", input.email).required("password", input.password, 4096);
  if (creating) {
    v.displayName("workspace_name", input.workspaceName, 200);
    if (!slugPattern.test(input.workspaceSlug)) {
      v.add(
        "workspace_slug",
        "must be 1-63 lower-case letters, digits or dashes, not starting or ending with a dash",
      );
    }
  }
  v.throwIfAny();
  if (creating && !deps.settings.allowWorkspaceCreation)
    throw new NotFoundError("workspace creation is disabled");

  let workspace: WorkspaceRow | undefined;
  if (!creating) {
    workspace = await lookUpWorkspace(deps.pool, {
      header: meta.workspaceHeader,
      field: "x-workspace-id",
    });
  } else if (await findWorkspaceBySlug(deps.pool, input.workspaceSlug)) {
    // Whether a slug is taken says nothing about any address, so it can be told.
    throw new AlreadyExistsError("workspace slug is taken", "workspace_slug");
  }
  const settings = effectiveSettings(
    workspace ?? { settings: {} },
    deps.settings.workspaceDefaults,
  );
  if (!creating && !settings.signup)
    throw new NotFoundError("sign-up is disabled for this workspace");
  await deps.limiter.hit(workspace ? { id: workspace.id, settings } : null, [
    ["signup_ip", meta.ipAddress ?? "unknown"],
    ["signup_address", normalizeEmail(input.email)],
  ]);
  deps.policy.check(input.password, { minLength: settings.password_min_length, field: "password" });

  // Hash before looking: new and existing addresses cost the same.
  const passwordHash = await deps.hasher.hash(input.password);
  const existing = await findUserByEmail(deps.pool, input.email);
  if (existing) {
    const inTransaction = <T>(fn: (tx: DatabaseTransactionConnection) => Promise<T>) =>
      workspace ? withTenant(deps.pool, workspace.id, fn) : deps.pool.transaction(fn);
    await inTransaction(async (tx) => {
      // The account's owner may join this open workspace with the account they have: the
      // mail carries a link to AcceptInvitation, which adds them once they follow it from
      // the mailbox (and, for a password nobody tied to the mailbox, choose a new one), so a
      // squatter's SignUp elsewhere never keeps the owner out (SECURITY.md 28, 30).
      let joinLink = "";
      if (workspace && !(await findMembership(tx, workspace.id, existing.id))) {
        const { secret } = await issueCode(tx, {
          tokenSecret: deps.tokenSecret,
          workspaceId: workspace.id,
          userId: existing.id,
          purpose: "join",
          kind: "link",
          now: deps.clock.now(),
          ttlSeconds: invitationTtlSeconds,
        });
        joinLink = appLink(deps.settings.publicUrl, "accept-invitation", secret);
      }
      await deps.mail.enqueue(tx, {
        workspaceId: workspace?.id ?? null,
        to: existing.email,
        template: "signup_existing_account",
        vars: {
          email: existing.email,
          // The owner of the address did not ask for this message: nothing of the request's
          // text goes into it (a workspace_name would put a stranger's words in a genuine
          // Keygate mail). An existing workspace is named by its short name, a new one not.
          workspace: workspace?.slug ?? "",
          login_link: deps.settings.publicUrl,
          reset_link: new URL(
            "reset-password",
            `${deps.settings.publicUrl.replace(/\/$/, "")}/`,
          ).toString(),
          join_link: joinLink,
        },
      });
      // No user in the event: the account has no membership here, and a workspace's audit
      // log names only its members (SECURITY.md 29).
      await audit(tx, deps, meta, {
        type: "signup",
        workspaceId: workspace?.id ?? null,
        outcome: "failure",
        details: { reason: "email_taken" },
      });
    });
    deps.mail.wake();
    return { emailVerificationRequired: settings.require_email_verification };
  }

  const created = await deps.pool
    .transaction(async (tx) => {
      const target =
        workspace ??
        (await insertWorkspace(tx, {
          name: input.workspaceName.trim(),
          slug: input.workspaceSlug,
        }));
      await setTenantWorkspace(tx, target.id);
      const user = await insertUser(tx, { email: input.email, passwordHash });
      // A concurrent sign-up with the same address won the race: roll back, and answer as for
      // a taken address.
      if (!user) throw raceLost;
      await ensureMembership(tx, {
        workspaceId: target.id,
        userId: user.id,
        role: creating ? "owner" : "member",
      });
      await audit(tx, deps, meta, {
        type: "signup",
        workspaceId: target.id,
        userId: user.id,
        outcome: "success",
        details: { created_workspace: creating },
      });
      if (settings.email_verification !== "off") {
        await sendVerification(tx, deps, meta, {
          workspace: target,
          user,
          mode: settings.email_verification,
        });
      }
      return user;
    })
    .catch((error: unknown) => {
      if (error === raceLost) return undefined;
      throw error;
    });
  if (created) deps.mail.wake();
  return { emailVerificationRequired: settings.require_email_verification };
}
