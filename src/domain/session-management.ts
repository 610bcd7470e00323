import { z } from "zod";
import { isOpaqueToken, opaqueHash } from "../crypto/opaque-tokens.js";
import { withTenant } from "../db/with-tenant.js";
import {
  FailedPreconditionError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
} from "../errors.js";
import {
  claimPending,
  findMembership,
  listActiveMembershipsOfUser,
} from "../repositories/memberships.js";
import {
  findRefreshTokenSession,
  findSession,
  findSessionView,
  listLiveSessions,
  revokeSession,
  type SessionRow,
} from "../repositories/sessions.js";
import { findUserById, type UserRow } from "../repositories/users.js";
import { findWorkspaceById, type WorkspaceRow } from "../repositories/workspaces.js";
import { accountMethods } from "./amr.js";
import { audit } from "./audit.js";
import type { AuthDeps, Principal, RequestMeta } from "./deps.js";
import type { LoginResult } from "./login.js";
import { sessionOrPending } from "./otp.js";
import { decodePageToken, pageOf, pageSize } from "./pagination.js";
import { signTokens } from "./sessions.js";
import { effectiveSettings } from "./settings.js";
import { isUuid, Violations } from "./validate.js";

/** Logout: ends the caller's session, named by the access token or by a refresh token. */
export async function logout(
  deps: AuthDeps,
  meta: RequestMeta,
  input: { principal: Principal | undefined; refreshToken: string },
): Promise<void> {
  let target: { workspaceId: string; sessionId: string } | undefined;
  if (input.principal) {
    target = { workspaceId: input.principal.workspaceId, sessionId: input.principal.sessionId };
  } else if (isOpaqueToken("refresh", input.refreshToken)) {
    const row = await findRefreshTokenSession(
      deps.pool,
      opaqueHash(deps.tokenSecret, "refresh", input.refreshToken),
    );
    if (row) target = { workspaceId: row.workspace_id, sessionId: row.session_id };
  } else if (input.refreshToken === "") {
    throw new UnauthenticatedError("UNAUTHENTICATED", "send an access token or the refresh token");
  }
  // An unknown or already ended session answers the same: nothing is left to end.
  if (!target) return;
  const t = target;
  await withTenant(deps.pool, t.workspaceId, async (tx) => {
    const session = await findSession(tx, t.workspaceId, t.sessionId);
    if (!session) return;
    if (await revokeSession(tx, { ...t, reason: "logout", now: deps.clock.now() })) {
      await audit(tx, deps, meta, {
        type: "logout",
        workspaceId: t.workspaceId,
        userId: session.user_id,
        sessionId: t.sessionId,
        outcome: "success",
      });
    }
  });
  await deps.revocations.changed();
}

/**
 * GetSession: the caller's session, user and workspace, read in one query. The user's
 * metadata is this workspace's object for them (SECURITY.md 29), not the account's own.
 */
export async function getSession(
  deps: AuthDeps,
  principal: Principal,
): Promise<{ user: UserRow; workspace: WorkspaceRow; session: SessionRow }> {
  const found = await withTenant(deps.pool, principal.workspaceId, (tx) =>
    findSessionView(tx, principal),
  );
  if (!found) throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended");
  const { user, workspace, session, membership } = found;
  return { user: { ...user, metadata: membership.metadata }, workspace, session };
}

const sessionCursor = z.object({ c: z.number(), i: z.uuid() });

export async function listSessions(
  deps: AuthDeps,
  principal: Principal,
  input: { pageSize: number; pageToken: string },
): Promise<{ sessions: readonly SessionRow[]; nextPageToken: string }> {
  const limit = pageSize(input.pageSize);
  const cursor = decodePageToken(input.pageToken, "sessions", sessionCursor);
  const rows = await withTenant(deps.pool, principal.workspaceId, (tx) =>
    listLiveSessions(tx, {
      workspaceId: principal.workspaceId,
      userId: principal.userId,
      now: deps.clock.now(),
      before: cursor ? { createdAt: cursor.c, id: cursor.i } : null,
      limit: limit + 1,
    }),
  );
  const { page, nextPageToken } = pageOf(rows, limit, "sessions", (last) => ({
    c: last.created_at,
    i: last.id,
  }));
  return { sessions: page, nextPageToken };
}

export async function revokeOwnSession(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal,
  sessionId: string,
): Promise<void> {
  new Violations().required("session_id", sessionId).uuid("session_id", sessionId).throwIfAny();
  await withTenant(deps.pool, principal.workspaceId, async (tx) => {
    const ok = await revokeSession(tx, {
      workspaceId: principal.workspaceId,
      sessionId,
      userId: principal.userId,
      reason: "revoked_by_user",
      now: deps.clock.now(),
    });
    if (!ok) throw new NotFoundError("session not found");
    await audit(tx, deps, meta, {
      type: "session_revoked",
      workspaceId: principal.workspaceId,
      userId: principal.userId,
      sessionId,
      actor: `user:${principal.userId}`,
      outcome: "success",
    });
  });
  await deps.revocations.changed();
}

const workspaceCursor = z.object({ w: z.uuid() });

export async function listMyWorkspaces(
  deps: AuthDeps,
  principal: Principal,
  input: { pageSize: number; pageToken: string },
) {
  const limit = pageSize(input.pageSize);
  const cursor = decodePageToken(input.pageToken, "workspaces", workspaceCursor);
  const rows = await listActiveMembershipsOfUser(
    deps.pool,
    principal.userId,
    cursor?.w ?? null,
    limit + 1,
  );
  const { page, nextPageToken } = pageOf(rows, limit, "workspaces", (last) => ({
    w: last.workspace_id,
  }));
  return { memberships: page, nextPageToken };
}

/**
 * Opens a session in another workspace of the same user, without the password again. The
 * target's requirements hold as they do at Login (SECURITY.md 31): a verified address where it
 * requires one, and its emailed second step, answered as a pending login.
 */
export async function switchWorkspace(
  deps: AuthDeps,
  meta: RequestMeta,
  principal: Principal,
  workspaceId: string,
): Promise<LoginResult> {
  new Violations().required("workspace_id", workspaceId).throwIfAny();
  if (!isUuid(workspaceId)) throw new NotFoundError("workspace not found");
  const outcome = await withTenant(deps.pool, workspaceId, async (tx) => {
    const workspace = await findWorkspaceById(tx, workspaceId);
    if (!workspace) throw new NotFoundError("workspace not found");
    const membership = await findMembership(tx, workspaceId, principal.userId);
    const user = await findUserById(tx, principal.userId);
    if (!user || !membership || membership.status !== "active") {
      throw new PermissionDeniedError(
        "MEMBERSHIP_INACTIVE",
        "no active membership in that workspace",
      );
    }
    const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
    if (settings.require_email_verification && !user.email_verified && !membership.email_verified) {
      throw new FailedPreconditionError(
        "EMAIL_NOT_VERIFIED",
        "that workspace requires a verified email address",
      );
    }
    if (claimPending(membership, user)) {
      throw new FailedPreconditionError(
        "EMAIL_NOT_VERIFIED",
        "prove your address for this workspace first: accept its invitation or reset your password",
      );
    }
    // The account's own proofs carry over; the factors of the workspace it came from do not,
    // nor the password into a workspace that takes none.
    const carried = accountMethods(principal.amr).filter(
      (m) => !(settings.passwordless_only && m === "pwd"),
    );
    if (settings.passwordless_only && carried.length === 0) {
      throw new NotFoundError(
        "that workspace takes no password: sign in to it with a passkey",
        "FLOW_DISABLED",
      );
    }
    // A session that proved nothing of the account (a passkey of the workspace it came from
    // is that workspace's only) has nothing to carry: sign in to the other one instead.
    // (Sessions from before methods were recorded say nothing, and switch as they did.)
    if (carried.length === 0 && principal.amr.length > 0) {
      throw new PermissionDeniedError(
        "PERMISSION_DENIED",
        "this session was signed in with a factor of its own workspace only: sign in to that workspace",
      );
    }
    const next = await sessionOrPending(tx, deps, meta, {
      workspace,
      user,
      role: membership.role,
      settings,
      amr: carried,
    });
    if (next.kind === "pending") return next;
    const draft = next.draft;
    await audit(tx, deps, meta, {
      type: "workspace_switched",
      workspaceId,
      userId: principal.userId,
      sessionId: draft.sessionId,
      outcome: "success",
      details: { from_workspace_id: principal.workspaceId },
    });
    return { kind: "draft" as const, draft };
  });
  if (outcome.kind === "pending") {
    deps.mail.wake();
    return outcome;
  }
  return { kind: "tokens", tokens: await signTokens(deps, outcome.draft) };
}
