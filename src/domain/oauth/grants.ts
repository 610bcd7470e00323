import type { DatabaseTransactionConnection } from "slonik";
import { z } from "zod";
import { withTenant } from "../../db/with-tenant.js";
import { NotFoundError } from "../../errors.js";
import { type GrantRow, listLiveGrants } from "../../repositories/grants.js";
import { deleteOAuthConsent } from "../../repositories/oauth-consents.js";
import { revokeSessions } from "../../repositories/sessions.js";
import { visibleUser } from "../admin/users-scope.js";
import {
  auditedCaller,
  type Caller,
  requirePowerOver,
  requireWorkspaceAdmin,
  requireWorkspaceRead,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AuthDeps, Principal, RequestMeta } from "../deps.js";
import { decodePageToken, pageOf, pageSize } from "../pagination.js";
import { Violations } from "../validate.js";

/**
 * Grants to the workspace's OAuth clients, listed and revoked by their user (AuthService) and
 * by the workspace's admins (AdminService). A grant is the user's live sessions for one client
 * (docs/openid-provider.md, "Grants"); revoking it revokes those sessions, so the revocation
 * feed, introspection and back-channel logout follow from the sessions' triggers as for any
 * other ended session.
 */

/** Client ids are `kgc_` and 22 base64url characters; anything much longer names none. */
const maxClientIdLength = 100;
const cursor = z.object({ u: z.uuid(), c: z.string().max(maxClientIdLength) });

interface GrantPage {
  readonly grants: readonly GrantRow[];
  readonly nextPageToken: string;
}

async function page(
  tx: DatabaseTransactionConnection,
  deps: Pick<AuthDeps, "clock">,
  input: {
    workspaceId: string;
    userId: string | null;
    clientId: string | null;
    pageSize: number;
    pageToken: string;
  },
): Promise<GrantPage> {
  // The filters are part of the list's name, so a token from another filter is refused.
  const list = `grants:${input.workspaceId}:${input.userId ?? "*"}:${input.clientId ?? "*"}`;
  const after = decodePageToken(input.pageToken, list, cursor);
  const limit = pageSize(input.pageSize);
  const rows = await listLiveGrants(tx, {
    workspaceId: input.workspaceId,
    userId: input.userId,
    clientId: input.clientId,
    now: deps.clock.now(),
    after: after ? { userId: after.u, clientId: after.c } : null,
    limit: limit + 1,
  });
  const { page, nextPageToken } = pageOf(rows, limit, list, (last) => ({
    u: last.user_id,
    c: last.client_id,
  }));
  return { grants: page, nextPageToken };
}

/**
 * Ends the user's grant to the client in the transaction's workspace through the one
 * session-revocation statement, and forgets their consent to it, so the next sign-in at the
 * client asks again; NOT_FOUND when there was neither a live grant (as ListGrants would show)
 * nor a consent, or another call ended them first. Answers how many sessions ended, and
 * whether a consent was forgotten.
 */
async function revokeGrant(
  tx: DatabaseTransactionConnection,
  deps: Pick<AuthDeps, "clock">,
  input: { workspaceId: string; userId: string; clientId: string; reason: string },
): Promise<{ sessions: number; consent: boolean }> {
  const now = deps.clock.now();
  const live = await listLiveGrants(tx, {
    workspaceId: input.workspaceId,
    userId: input.userId,
    clientId: input.clientId,
    now,
    after: null,
    limit: 1,
  });
  const ended =
    live.length === 0
      ? []
      : await revokeSessions(tx, {
          userId: input.userId,
          workspaceId: input.workspaceId,
          clientId: input.clientId,
          reason: input.reason,
          now,
        });
  // A consent outlives the sessions it let in (a sign-out ends those): taking back the grant
  // must reach it even when no session is left.
  const consent = await deleteOAuthConsent(tx, input);
  if (ended.length === 0 && !consent) throw new NotFoundError("no live grant to this client");
  return { sessions: ended.length, consent };
}

function validClientId(v: Violations, clientId: string, required: boolean): Violations {
  if (required || clientId !== "") v.required("client_id", clientId, maxClientIdLength);
  return v;
}

/** AuthService.ListGrants: the caller's own grants in the workspace of their session. */
export function listOwnGrants(
  deps: Pick<AuthDeps, "pool" | "clock">,
  principal: Principal,
  input: { pageSize: number; pageToken: string },
): Promise<GrantPage> {
  return withTenant(deps.pool, principal.workspaceId, (tx) =>
    page(tx, deps, {
      workspaceId: principal.workspaceId,
      userId: principal.userId,
      clientId: null,
      ...input,
    }),
  );
}

/**
 * AuthService.RevokeGrant: the caller's own grant to the client, in their session's
 * workspace; their own session (never a grant: grant tokens do not call Keygate) stays.
 */
export async function revokeOwnGrant(
  deps: Pick<AuthDeps, "pool" | "clock" | "revocations">,
  meta: RequestMeta,
  principal: Principal,
  clientId: string,
): Promise<number> {
  validClientId(new Violations(), clientId, true).throwIfAny();
  const revoked = await withTenant(deps.pool, principal.workspaceId, async (tx) => {
    const revoked = await revokeGrant(tx, deps, {
      workspaceId: principal.workspaceId,
      userId: principal.userId,
      clientId,
      reason: "revoked_by_user",
    });
    await audit(tx, deps, meta, {
      type: "grant_revoked",
      workspaceId: principal.workspaceId,
      userId: principal.userId,
      sessionId: principal.sessionId,
      actor: `user:${principal.userId}`,
      outcome: "success",
      details: {
        client_id: clientId,
        sessions_revoked: revoked.sessions,
        consent_forgotten: revoked.consent,
      },
    });
    return revoked.sessions;
  });
  await deps.revocations.changed();
  return revoked;
}

/** AdminService.ListGrants: a workspace's grants, for that workspace's readers. */
export function listWorkspaceGrants(
  deps: Pick<AuthDeps, "pool" | "clock">,
  caller: Caller,
  input: {
    workspaceId: string;
    userId: string;
    clientId: string;
    pageSize: number;
    pageToken: string;
  },
): Promise<GrantPage> {
  validClientId(
    new Violations()
      .required("workspace_id", input.workspaceId, 36)
      .uuid("workspace_id", input.workspaceId)
      .uuid("user_id", input.userId),
    input.clientId,
    false,
  ).throwIfAny();
  requireWorkspaceRead(caller, input.workspaceId);
  return withTenant(deps.pool, input.workspaceId, (tx) =>
    page(tx, deps, {
      ...input,
      userId: input.userId === "" ? null : input.userId,
      clientId: input.clientId === "" ? null : input.clientId,
    }),
  );
}

/**
 * AdminService.RevokeGrants: a member's grant to a client, for the workspace's admins; an
 * owner's only for owners (or keys no admin minted), as RevokeUserSessions.
 */
export async function revokeMemberGrants(
  deps: Pick<AuthDeps, "pool" | "clock" | "revocations">,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; userId: string; clientId: string },
): Promise<number> {
  validClientId(
    new Violations()
      .required("workspace_id", input.workspaceId, 36)
      .uuid("workspace_id", input.workspaceId)
      .required("user_id", input.userId, 36)
      .uuid("user_id", input.userId),
    input.clientId,
    true,
  ).throwIfAny();
  requireWorkspaceAdmin(caller, input.workspaceId);
  const revoked = await withTenant(deps.pool, input.workspaceId, async (tx) => {
    // Only a member of this workspace is named (SECURITY.md 29): anyone else is NOT_FOUND.
    const { role } = await visibleUser(tx, input.workspaceId, input.userId);
    requirePowerOver(caller, role);
    const revoked = await revokeGrant(tx, deps, { ...input, reason: "admin_revoked" });
    await audit(tx, deps, meta, {
      type: "grant_revoked",
      workspaceId: input.workspaceId,
      userId: input.userId,
      ...auditedCaller(caller),
      outcome: "success",
      details: {
        client_id: input.clientId,
        sessions_revoked: revoked.sessions,
        consent_forgotten: revoked.consent,
      },
    });
    return revoked.sessions;
  });
  await deps.revocations.changed();
  return revoked;
}
