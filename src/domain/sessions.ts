import { setTimeout as sleep } from "node:timers/promises";
import type { DatabaseTransactionConnection } from "slonik";
import type { WorkspaceSettings } from "../config.js";
import {
  isOpaqueToken,
  newOpaqueToken,
  opaqueHash,
  successorRefreshToken,
} from "../crypto/opaque-tokens.js";
import { setTenantWorkspace } from "../db/with-tenant.js";
import { PermissionDeniedError, UnauthenticatedError, UnavailableError } from "../errors.js";
import { lockMembershipForSession, type Role } from "../repositories/memberships.js";
import {
  findRefreshTokenChild,
  findSessionAccess,
  type GrantOfSession,
  insertRefreshToken,
  insertSession,
  lockRefreshTokenByHash,
  lockSession,
  markRefreshTokenRotated,
  refreshAccess,
  revokeSession,
  type SessionRow,
  touchSession,
} from "../repositories/sessions.js";
import { type Amr, acrOf, amrOf } from "./amr.js";
import { audit } from "./audit.js";
import type { AuthDeps, Principal, RequestMeta } from "./deps.js";
import { narrowResources } from "./oauth/resources.js";
import { effectiveSettings } from "./settings.js";
import { isUuid, Violations } from "./validate.js";

export interface IssuedTokens {
  readonly accessToken: string;
  readonly accessTokenExpiresAt: Date;
  readonly refreshToken: string;
  readonly refreshTokenExpiresAt: Date;
  readonly sessionId: string;
  readonly userId: string;
  readonly workspaceId: string;
  readonly role: Role;
  /** How the session was signed in (RFC 8176), and the acr that follows from it. */
  readonly amr: readonly Amr[];
  readonly acr: string;
}

const addSeconds = (d: Date, s: number) => new Date(d.getTime() + s * 1000);

/** The refresh chain's end: the idle timeout from now, capped by the absolute lifetime. */
function refreshExpiry(session: Pick<SessionRow, "expires_at">, idleExpiresAt: Date): Date {
  return new Date(Math.min(session.expires_at, idleExpiresAt.getTime()));
}

/**
 * A session's tokens before the access token is signed. Signing happens after the
 * transaction commits: a transaction holds a connection, and the signer may need the pool
 * to pick up keys (and a token must not exist for a session that rolled back).
 */
export interface TokenDraft
  extends Omit<IssuedTokens, "accessToken" | "accessTokenExpiresAt" | "acr"> {
  readonly accessTokenTtlSeconds: number;
  /** When the transaction read what the token says (role, status): its facts are as of then. */
  readonly readAt: Date;
  /** A grant's client, scopes and RFC 8707 resources, for its access tokens (RFC 9068). */
  readonly grant?: TokenGrant;
}

export interface TokenGrant {
  readonly clientId: string;
  readonly scopes: readonly string[];
  /** The token's audience; empty: the workspace's provider. */
  readonly resources: readonly string[];
}

export async function signTokens(deps: AuthDeps, draft: TokenDraft): Promise<IssuedTokens> {
  const { accessTokenTtlSeconds, readAt, grant, ...rest } = draft;
  const cutOff = deps.revocations.cutOffFor(draft.userId, draft.workspaceId);
  const signing = {
    userId: draft.userId,
    workspaceId: draft.workspaceId,
    sessionId: draft.sessionId,
    role: draft.role,
    amr: draft.amr,
    acr: acrOf(draft.amr),
    ...(grant
      ? { clientId: grant.clientId, scopes: grant.scopes, resources: grant.resources }
      : {}),
    ttlSeconds: accessTokenTtlSeconds,
  };
  let access: Awaited<ReturnType<typeof deps.tokens.signAccessToken>>;
  if (cutOff !== null && cutOff > readAt.getTime()) {
    // The user or membership changed after the transaction read them (a demotion or a
    // removal racing this login): the token carries the facts as they were then, so it is
    // issued as of then, and the cut-off ends it like every token from before it.
    access = await deps.tokens.signAccessToken({ ...signing, issuedAt: readAt });
  } else {
    // A token issued in the same second as an earlier cut-off (a role change, a reset) would
    // count as issued before it: wait for the next second instead.
    const now = deps.clock.now().getTime();
    if (cutOff !== null && cutOff >= Math.floor(now / 1000) * 1000) {
      await sleep(1_000 - (now % 1_000) + 1);
    }
    access = await deps.tokens.signAccessToken({
      ...signing,
      ...(cutOff === null ? {} : { issuedAfter: new Date(cutOff) }),
    });
  }
  return {
    ...rest,
    acr: acrOf(draft.amr),
    accessToken: access.token,
    accessTokenExpiresAt: access.expiresAt,
  };
}

/**
 * How long after its transaction an access token may be signed. Sessions record the latest
 * expiry of their access tokens (for how long a revocation matters) with this allowance.
 */
const signingAllowanceSeconds = 60;

function accessExpiry(now: Date, settings: Pick<WorkspaceSettings, "access_token_ttl_seconds">) {
  return addSeconds(now, settings.access_token_ttl_seconds + signingAllowanceSeconds);
}

interface SessionInput {
  workspaceId: string;
  userId: string;
  role: Role;
  settings: WorkspaceSettings;
  /** How the user proved who they are, for the session and each of its tokens. */
  amr: readonly Amr[];
  /**
   * A grant of the OpenID Provider (its client, the browser session it hangs from, the
   * resources it was made for), and the resources its first access token is for when only
   * some of those (RFC 8707 section 2.2); a refresh may still ask for any of the grant's.
   */
  grant?: GrantOfSession & { readonly tokenResources?: readonly string[] };
}

/**
 * What opening a session writes, decided before the statements that write it: its times, and
 * its first refresh token with the keyed hash that is kept of it.
 */
export function planSession<I extends SessionInput>(
  deps: Pick<AuthDeps, "clock" | "tokenSecret">,
  meta: RequestMeta,
  input: I,
) {
  const now = deps.clock.now();
  const idleExpiresAt = addSeconds(now, input.settings.refresh_idle_timeout_seconds);
  const refreshToken = newOpaqueToken("refresh");
  return {
    input,
    refreshToken,
    refreshTokenHash: opaqueHash(deps.tokenSecret, "refresh", refreshToken),
    session: {
      workspaceId: input.workspaceId,
      userId: input.userId,
      ipAddress: meta.ipAddress,
      userAgent: meta.userAgent?.slice(0, 512) ?? null,
      now,
      idleExpiresAt,
      expiresAt: addSeconds(now, input.settings.session_lifetime_seconds),
      accessExpiresAt: accessExpiry(now, input.settings),
      amr: input.amr,
      ...(input.grant ? { grant: input.grant } : {}),
    },
  };
}

/** The token draft of a session opened by its plan, with the membership's role as locked. */
export function sessionDraft(
  plan: ReturnType<typeof planSession>,
  sessionId: string,
  role: Role,
): TokenDraft {
  const { input, session } = plan;
  return {
    refreshToken: plan.refreshToken,
    refreshTokenExpiresAt: refreshExpiry(
      { expires_at: session.expiresAt.getTime() },
      session.idleExpiresAt,
    ),
    sessionId,
    userId: input.userId,
    workspaceId: input.workspaceId,
    role,
    amr: amrOf(input.amr),
    accessTokenTtlSeconds: input.settings.access_token_ttl_seconds,
    readAt: session.now,
    ...(input.grant
      ? {
          grant: {
            clientId: input.grant.clientId,
            scopes: input.grant.scopes,
            resources: input.grant.tokenResources ?? input.grant.resources,
          },
        }
      : {}),
  };
}

/** Thrown when the membership a sign-in read is no longer active under its lock. */
export const membershipChanged = () =>
  new UnavailableError("the membership changed while signing in; retry");

/** Opens a session with its first refresh token, inside the caller's tenant transaction. */
export async function openSession(
  tx: DatabaseTransactionConnection,
  deps: AuthDeps,
  meta: RequestMeta,
  input: SessionInput,
): Promise<TokenDraft> {
  // The caller read the membership already; read it again under a share lock, so that a
  // demotion or removal racing this sign-in either happened before (and is seen here) or
  // waits for this transaction (and its cut-off, later than readAt, ends the new token).
  const member = await lockMembershipForSession(tx, input.workspaceId, input.userId);
  if (member?.status !== "active") throw membershipChanged();
  const plan = planSession(deps, meta, input);
  const session = await insertSession(tx, plan.session);
  await insertRefreshToken(tx, {
    workspaceId: input.workspaceId,
    sessionId: session.id,
    hash: plan.refreshTokenHash,
    parentId: null,
    now: plan.session.now,
  });
  return sessionDraft(plan, session.id, member.role);
}

type RefreshOutcome =
  | { kind: "ok"; draft: TokenDraft }
  | { kind: "reused"; workspaceId: string }
  | { kind: "invalid"; reason: "REFRESH_TOKEN_INVALID" | "SESSION_EXPIRED" };

const invalidRefresh = () =>
  new UnauthenticatedError("REFRESH_TOKEN_INVALID", "refresh token is invalid or expired");

/**
 * Rotates a refresh token (SECURITY.md 8-10, 12). The presented token's row is locked, then
 * its session's, so concurrent refreshes of one session run one after another:
 * - a live token gets exactly one successor (a unique parent_id backs this up);
 * - the immediate parent of the live token, within the grace window, gets that same
 *   successor again (a client that lost the answer);
 * - any other rotated token is reuse: the session is revoked, the event audited, and the
 *   revocation commits although the call fails.
 */
export async function refresh(
  deps: AuthDeps,
  meta: RequestMeta,
  presented: string,
  /**
   * The OAuth client refreshing (the token endpoint) and the RFC 8707 resources it names, or
   * null (AuthService.Refresh): a grant's refresh token works only for its own client, a
   * session's only through AuthService.
   */
  client: { readonly id: string; readonly resources: readonly string[] } | null = null,
): Promise<IssuedTokens> {
  const clientId = client?.id ?? null;
  if (!isOpaqueToken("refresh", presented)) throw invalidRefresh();
  const hash = opaqueHash(deps.tokenSecret, "refresh", presented);
  const outcome = await deps.pool.transaction(async (tx): Promise<RefreshOutcome> => {
    const token = await lockRefreshTokenByHash(tx, hash);
    if (!token) return { kind: "invalid", reason: "REFRESH_TOKEN_INVALID" };
    await setTenantWorkspace(tx, token.workspace_id);
    const row = await lockSession(tx, token.workspace_id, token.session_id);
    const now = deps.clock.now();
    if (!row || row.revoked_at !== null || row.client_id !== clientId)
      return { kind: "invalid", reason: "REFRESH_TOKEN_INVALID" };
    if (row.expires_at <= now.getTime() || row.idle_expires_at <= now.getTime()) {
      return { kind: "invalid", reason: "SESSION_EXPIRED" };
    }
    const access = await refreshAccess(tx, row.workspace_id, row.user_id);
    if (!access || access.blocked || access.status !== "active" || access.role === null) {
      return { kind: "invalid", reason: "REFRESH_TOKEN_INVALID" };
    }
    const role = access.role;

    let successor: string;
    if (token.rotated_at === null) {
      successor = successorRefreshToken(deps.tokenSecret, presented);
      await insertRefreshToken(tx, {
        workspaceId: token.workspace_id,
        sessionId: token.session_id,
        hash: opaqueHash(deps.tokenSecret, "refresh", successor),
        parentId: token.id,
        now,
      });
      await markRefreshTokenRotated(tx, { workspaceId: token.workspace_id, id: token.id, now });
    } else {
      const child = await findRefreshTokenChild(tx, token.workspace_id, token.id);
      const inGrace = now.getTime() - token.rotated_at <= deps.settings.refreshGraceSeconds * 1000;
      if (!child || child.rotated_at !== null || !inGrace) {
        await revokeSession(tx, {
          workspaceId: token.workspace_id,
          sessionId: token.session_id,
          reason: "refresh_token_reuse",
          now,
        });
        await audit(tx, deps, meta, {
          type: "refresh_reuse_detected",
          workspaceId: token.workspace_id,
          userId: row.user_id,
          sessionId: row.id,
          outcome: "failure",
        });
        return { kind: "reused", workspaceId: token.workspace_id };
      }
      successor = successorRefreshToken(deps.tokenSecret, presented);
    }

    const settings = effectiveSettings(access, deps.settings.workspaceDefaults);
    const idleExpiresAt = new Date(
      Math.min(row.expires_at, now.getTime() + settings.refresh_idle_timeout_seconds * 1000),
    );
    await touchSession(tx, {
      workspaceId: row.workspace_id,
      sessionId: row.id,
      now,
      idleExpiresAt,
      accessExpiresAt: accessExpiry(now, settings),
    });
    await audit(tx, deps, meta, {
      type: "refresh",
      workspaceId: row.workspace_id,
      userId: row.user_id,
      sessionId: row.id,
      outcome: "success",
    });
    return {
      kind: "ok",
      draft: {
        refreshToken: successor,
        refreshTokenExpiresAt: idleExpiresAt,
        sessionId: row.id,
        userId: row.user_id,
        workspaceId: row.workspace_id,
        role,
        amr: amrOf(row.amr),
        accessTokenTtlSeconds: settings.access_token_ttl_seconds,
        readAt: now,
        ...(row.client_id !== null
          ? {
              grant: {
                clientId: row.client_id,
                scopes: row.scopes ?? [],
                // A resource outside the grant throws: the rotation rolls back with the call.
                resources: narrowResources(row.resources ?? [], client?.resources ?? []),
              },
            }
          : {}),
      },
    };
  });
  switch (outcome.kind) {
    case "ok":
      return signTokens(deps, outcome.draft);
    case "reused":
      await deps.revocations.changed();
      throw new UnauthenticatedError(
        "REFRESH_TOKEN_REUSED",
        "refresh token was already used; the session has been revoked",
      );
    case "invalid":
      throw outcome.reason === "SESSION_EXPIRED"
        ? new UnauthenticatedError("SESSION_EXPIRED", "the session has expired; log in again")
        : invalidRefresh();
  }
}

/**
 * The caller behind an access token: signature, issuer, audience and expiry (the signer's
 * checks), the x-workspace-id header against the token's workspace, then in one query that
 * the session is live, the user not blocked and the membership active.
 *
 * That query is one statement on the pool, not a tenant transaction: it runs on every signed-in
 * call, and a transaction would make its one round trip four (BEGIN, the tenant settings, the
 * query, COMMIT). It is one of the deliberate service-role reads (migrations/011): it reads one
 * row, named by the workspace, session and user of a token whose signature has just been
 * checked, and hands back only whether that row allows the call.
 */
export async function authenticate(
  deps: AuthDeps,
  token: string,
  workspaceHeader: string | null,
  /**
   * Whose token is expected: Keygate's own sessions' (every RPC), or an OAuth client's for
   * the provider whose issuer is `audience` (its userinfo). A client's token never calls
   * Keygate's API as its user.
   */
  issuedTo: "keygate" | { readonly clientOf: string } = "keygate",
): Promise<Principal> {
  const forClient = issuedTo !== "keygate";
  const claims = await deps.tokens.verifyAccessToken(
    token,
    forClient ? { provider: issuedTo.clientOf } : {},
  );
  if (((claims.clientId ?? null) !== null) !== forClient) {
    throw new UnauthenticatedError(
      "UNAUTHENTICATED",
      forClient
        ? "not an access token issued to an OAuth client"
        : "this token was issued to an OAuth client; it cannot call Keygate's API",
    );
  }
  if (workspaceHeader !== null && !isUuid(workspaceHeader)) {
    // A header that names no workspace at all is the caller's mistake, as sign-up says it.
    new Violations().add("x-workspace-id", "is not a valid id").throwIfAny();
  }
  if (workspaceHeader !== null && workspaceHeader !== claims.workspaceId) {
    throw new PermissionDeniedError(
      "WORKSPACE_MISMATCH",
      "x-workspace-id does not match the token's workspace",
    );
  }
  const row = await findSessionAccess(deps.pool, claims);
  if (
    !row ||
    row.revoked_at !== null ||
    row.expires_at <= deps.clock.now().getTime() ||
    row.blocked
  ) {
    throw new UnauthenticatedError("UNAUTHENTICATED", "the session has ended; log in again");
  }
  if (row.status !== "active") {
    throw new PermissionDeniedError(
      "MEMBERSHIP_INACTIVE",
      "no active membership in this workspace",
    );
  }
  return {
    userId: claims.userId,
    workspaceId: claims.workspaceId,
    sessionId: claims.sessionId,
    role: (row.role ?? claims.role) as Role,
    amr: amrOf(claims.amr),
  };
}
