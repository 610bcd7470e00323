import { enterTenant } from "../../db/with-tenant.js";
import { AlreadyExistsError, NotFoundError, UnavailableError } from "../../errors.js";
import {
  type AdminUserRow,
  findAdminUser,
  findUserIdByEmail,
  insertProvisionedUser,
  insertWorkspaceIfAbsent,
} from "../../repositories/admin-users.js";
import {
  findMembership,
  insertMembershipIfAbsent,
  type MembershipRow,
  markClaimed,
  type Role,
} from "../../repositories/memberships.js";
import { findUserById, markEmailVerified } from "../../repositories/users.js";
import {
  findWorkspaceById,
  findWorkspaceBySlug,
  type WorkspaceRow,
} from "../../repositories/workspaces.js";
import {
  actorOf,
  type Caller,
  callerWorkspace,
  requireDeploymentAdmin,
  requireOwnerPower,
  requireWorkspaceAdmin,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AdminDeps, RequestMeta } from "../deps.js";
import { sendInvitation } from "../invitation.js";
import { effectiveSettings } from "../settings.js";
import { slugPattern, Violations } from "../validate.js";
import { checkMetadataSize } from "./users.js";

export interface ProvisionUserInput {
  readonly email: string;
  /** Empty: the user signs in with magic links or codes. */
  readonly password: string;
  readonly emailVerified: boolean;
  readonly metadata: Record<string, unknown> | undefined;
  /** An existing workspace... */
  readonly workspaceId: string;
  /** ...or a new one (deployment admin only). */
  readonly createWorkspace: { readonly name: string; readonly slug: string } | undefined;
  readonly role: Role;
}

export interface ProvisionUserResult {
  readonly user: AdminUserRow;
  readonly membership: MembershipRow;
  /** This call created the user. */
  readonly created: boolean;
}

/**
 * Trusted provisioning: creates the user (unless the address has an account) with a
 * membership in an existing or a new workspace. Ignores the workspace's sign-up flag and
 * sends no mail; honours the password policy.
 *
 * Idempotent, also under concurrency: the user, workspace and membership inserts are
 * `ON CONFLICT DO NOTHING`, so a concurrent identical call waits for the first one's commit
 * and then reads its rows, and answers them with created=false. An address that already has
 * an account keeps its password, verification state and metadata; only the membership is
 * added. The same address and workspace with another role is ALREADY_EXISTS, as is a
 * create_workspace slug that is taken by a workspace this user is not already in.
 */
export async function provisionUser(
  deps: AdminDeps,
  caller: Caller,
  meta: RequestMeta,
  input: ProvisionUserInput,
): Promise<ProvisionUserResult> {
  const create = input.createWorkspace;
  const v = new Violations().email("email", input.email).uuid("workspace_id", input.workspaceId);
  if (input.password.length > 4096) v.add("password", "is longer than 4096 characters");
  if (create) {
    if (input.workspaceId !== "")
      v.add("workspace_id", "give either workspace_id or create_workspace, not both");
    v.displayName("create_workspace.name", create.name, 200);
    if (!slugPattern.test(create.slug)) {
      v.add(
        "create_workspace.slug",
        "must be 1-63 lower-case letters, digits or dashes, not starting or ending with a dash",
      );
    }
  } else if (input.workspaceId === "") {
    v.add("workspace_id", "is required (or create_workspace)");
  }
  v.throwIfAny();
  if (input.metadata) checkMetadataSize("metadata", input.metadata);

  if (create) requireDeploymentAdmin(caller);
  else requireWorkspaceAdmin(caller, input.workspaceId);
  // As for AddMember: only an owner (or a key no admin minted) makes someone an owner.
  if (input.role === "owner") requireOwnerPower(caller);

  let existing: WorkspaceRow | undefined;
  if (!create) {
    existing = (await findWorkspaceById(deps.pool, input.workspaceId)) ?? undefined;
    if (!existing) throw new NotFoundError("workspace not found");
  }
  const settings = effectiveSettings(existing ?? { settings: {} }, deps.settings.workspaceDefaults);
  let passwordHash: string | null = null;
  if (input.password !== "") {
    deps.policy.check(input.password, {
      minLength: settings.password_min_length,
      field: "password",
    });
    passwordHash = await deps.hasher.hash(input.password);
  }

  let mailed = false;
  const result = await deps.pool.transaction(async (tx) => {
    let workspace: WorkspaceRow | null;
    let workspaceCreated = false;
    if (create) {
      workspace = await insertWorkspaceIfAbsent(tx, {
        name: create.name.trim(),
        slug: create.slug,
        settings: {},
      });
      workspaceCreated = workspace !== null;
      workspace ??= await findWorkspaceBySlug(tx, create.slug);
    } else {
      workspace = await findWorkspaceById(tx, input.workspaceId);
    }
    if (!workspace) throw new NotFoundError("workspace not found");
    // The rest is tenant-owned: row-level security on, as in withTenant.
    await enterTenant(tx, workspace.id);

    // Only a deployment admin speaks for the address everywhere; a workspace's word that it
    // is verified holds for that workspace only (its membership).
    const deploymentWide = callerWorkspace(caller) === null;
    const insertedId = await insertProvisionedUser(tx, {
      email: input.email,
      passwordHash,
      emailVerified: deploymentWide && input.emailVerified,
      // A deployment admin vouching for a new account vouches for its password too.
      passwordProvenAt:
        deploymentWide && input.emailVerified && passwordHash ? deps.clock.now() : null,
    });
    const userId = insertedId ?? (await findUserIdByEmail(tx, input.email));
    // Only when a concurrent DeleteUser removed the account between the two statements.
    if (!userId) throw new UnavailableError("the account changed concurrently; retry");

    // An account from before joins a workspace only with its owner's consent, unless a
    // deployment admin adds it (SECURITY.md 30): the membership is an invitation, mailed.
    const invited = insertedId === null && !deploymentWide;
    const inserted = await insertMembershipIfAbsent(tx, {
      workspaceId: workspace.id,
      userId,
      role: input.role,
      emailVerified: !deploymentWide && input.emailVerified,
      invited,
      metadata: input.metadata ?? {},
    });
    const membership = inserted ?? (await findMembership(tx, workspace.id, userId));
    if (!membership) throw new UnavailableError("the membership changed concurrently; retry");
    // A taken slug is a repeat only when this user already was in that workspace.
    if (create && !workspaceCreated && inserted)
      throw new AlreadyExistsError("workspace slug is taken", "create_workspace.slug");
    if (membership.role !== input.role) {
      throw new AlreadyExistsError(
        "the user is already a member of this workspace with another role",
        "role",
      );
    }

    // An existing account newly added here: the account is left as it is (no workspace may
    // change another's credentials), but a password nobody tied to the mailbox does not open
    // this workspace until the owner proves the address (SECURITY.md 28).
    if (insertedId === null && inserted !== null) {
      const account = await findUserById(tx, userId);
      if (account && invited) {
        await sendInvitation(tx, deps, { workspace, user: account });
        mailed = true;
      } else if (account) {
        if (account.password_proven_at === null)
          await markClaimed(tx, { workspaceId: workspace.id, userId, now: deps.clock.now() });
        if (deploymentWide && input.emailVerified && !account.email_verified)
          await markEmailVerified(tx, userId);
      }
    }
    if (insertedId !== null || inserted !== null) {
      await audit(tx, deps, meta, {
        type: "user_provisioned",
        workspaceId: workspace.id,
        userId,
        actor: actorOf(caller),
        outcome: "success",
        details: {
          created_user: insertedId !== null,
          created_workspace: workspaceCreated,
          role: input.role,
          invited: membership.status === "invited",
        },
      });
    }
    // The workspace's view of its member; of an invitation, the account as it is (the
    // handler answers only its id and address).
    const user = (await findAdminUser(
      tx,
      userId,
      membership.status === "invited" ? null : workspace.id,
    )) as AdminUserRow;
    return { user, membership, created: insertedId !== null };
  });
  if (mailed) deps.mail.wake();
  return result;
}
