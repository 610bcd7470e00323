import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import type { AuthDeps } from "../domain/deps.js";
import { acceptInvitation } from "../domain/invitation.js";
import { login } from "../domain/login.js";
import { consumeMagicLink, requestMagicLink } from "../domain/magic-link.js";
import { listOwnGrants, revokeOwnGrant } from "../domain/oauth/grants.js";
import { changePassword, requestPasswordReset, resetPassword } from "../domain/recovery.js";
import {
  getSession,
  listMyWorkspaces,
  listSessions,
  logout,
  revokeOwnSession,
  switchWorkspace,
} from "../domain/session-management.js";
import { refresh } from "../domain/sessions.js";
import { signUp } from "../domain/signup.js";
import { requestEmailVerification, verifyEmail } from "../domain/verification.js";
import { InvalidArgumentError } from "../errors.js";
import { maybePrincipal, meta, principal } from "./call-context.js";
import {
  grantOf,
  membershipOf,
  pendingLoginOf,
  roleOf,
  sessionOf,
  tokensOf,
  userOf,
  workspaceOf,
} from "./convert.js";

function oneofMissing(field: string): never {
  throw new InvalidArgumentError([{ field, description: "is required: set token or code" }]);
}

/** AuthService: translates between the API and the flows in src/domain. */
export class AuthServiceHandler implements ServiceImpl<typeof AuthService> {
  constructor(private readonly deps: AuthDeps) {}

  async signUp(req: Parameters<ServiceImpl<typeof AuthService>["signUp"]>[0], ctx: HandlerContext) {
    return signUp(this.deps, meta(ctx), req);
  }

  async login(req: Parameters<ServiceImpl<typeof AuthService>["login"]>[0], ctx: HandlerContext) {
    const result = await login(this.deps, meta(ctx), req);
    if (result.kind === "tokens")
      return { result: { case: "tokens" as const, value: tokensOf(result.tokens) } };
    return { result: { case: "pendingLogin" as const, value: pendingLoginOf(result.pending) } };
  }

  async refresh(req: { refreshToken: string }, ctx: HandlerContext) {
    return { tokens: tokensOf(await refresh(this.deps, meta(ctx), req.refreshToken)) };
  }

  async logout(req: { refreshToken: string }, ctx: HandlerContext) {
    await logout(this.deps, meta(ctx), {
      principal: maybePrincipal(ctx),
      refreshToken: req.refreshToken,
    });
    return {};
  }

  async getSession(_req: unknown, ctx: HandlerContext) {
    const p = principal(ctx);
    const { user, workspace, session } = await getSession(this.deps, p);
    return {
      user: userOf(user),
      workspace: workspaceOf(workspace),
      role: roleOf(p.role),
      session: sessionOf(session, p.sessionId),
    };
  }

  async listSessions(req: { pageSize: number; pageToken: string }, ctx: HandlerContext) {
    const p = principal(ctx);
    const page = await listSessions(this.deps, p, req);
    return {
      sessions: page.sessions.map((s) => sessionOf(s, p.sessionId)),
      nextPageToken: page.nextPageToken,
    };
  }

  async revokeSession(req: { sessionId: string }, ctx: HandlerContext) {
    await revokeOwnSession(this.deps, meta(ctx), principal(ctx), req.sessionId);
    return {};
  }

  async listGrants(req: { pageSize: number; pageToken: string }, ctx: HandlerContext) {
    const page = await listOwnGrants(this.deps, principal(ctx), req);
    return { grants: page.grants.map(grantOf), nextPageToken: page.nextPageToken };
  }

  async revokeGrant(req: { clientId: string }, ctx: HandlerContext) {
    return {
      revokedCount: await revokeOwnGrant(this.deps, meta(ctx), principal(ctx), req.clientId),
    };
  }

  async changePassword(
    req: { currentPassword: string; newPassword: string; actionProof: string },
    ctx: HandlerContext,
  ) {
    await changePassword(this.deps, meta(ctx), principal(ctx), req);
    return {};
  }

  async requestPasswordReset(
    req: { email: string; workspaceId: string; workspaceSlug: string },
    ctx: HandlerContext,
  ) {
    await requestPasswordReset(this.deps, meta(ctx), req);
    return {};
  }

  async resetPassword(
    req: Parameters<ServiceImpl<typeof AuthService>["resetPassword"]>[0],
    ctx: HandlerContext,
  ) {
    const proof = req.proof;
    if (proof.case === "token") {
      await resetPassword(this.deps, meta(ctx), {
        token: proof.value,
        newPassword: req.newPassword,
      });
    } else if (proof.case === "code") {
      await resetPassword(this.deps, meta(ctx), { ...proof.value, newPassword: req.newPassword });
    } else oneofMissing("proof");
    return {};
  }

  async sendEmailVerification(
    req: { email: string; workspaceId: string; workspaceSlug: string },
    ctx: HandlerContext,
  ) {
    await requestEmailVerification(this.deps, meta(ctx), {
      ...req,
      principal: maybePrincipal(ctx),
    });
    return {};
  }

  async verifyEmail(
    req: Parameters<ServiceImpl<typeof AuthService>["verifyEmail"]>[0],
    ctx: HandlerContext,
  ) {
    const proof = req.proof;
    if (proof.case === "token") await verifyEmail(this.deps, meta(ctx), { token: proof.value });
    else if (proof.case === "code") await verifyEmail(this.deps, meta(ctx), proof.value);
    else oneofMissing("proof");
    return {};
  }

  async requestMagicLink(
    req: { email: string; workspaceId: string; workspaceSlug: string },
    ctx: HandlerContext,
  ) {
    await requestMagicLink(this.deps, meta(ctx), req);
    return {};
  }

  async consumeMagicLink(req: { token: string }, ctx: HandlerContext) {
    const result = await consumeMagicLink(this.deps, meta(ctx), req.token);
    if (result.kind === "tokens") return { tokens: tokensOf(result.tokens) };
    return { pendingLogin: pendingLoginOf(result.pending) };
  }

  async listMyWorkspaces(req: { pageSize: number; pageToken: string }, ctx: HandlerContext) {
    const page = await listMyWorkspaces(this.deps, principal(ctx), req);
    return {
      memberships: page.memberships.map((m) => membershipOf(m)),
      nextPageToken: page.nextPageToken,
    };
  }

  async acceptInvitation(req: { token: string; password: string }, ctx: HandlerContext) {
    const result = await acceptInvitation(this.deps, meta(ctx), req);
    if (result.kind === "tokens") return { tokens: tokensOf(result.tokens) };
    return { pendingLogin: pendingLoginOf(result.pending) };
  }

  async switchWorkspace(req: { workspaceId: string }, ctx: HandlerContext) {
    const result = await switchWorkspace(this.deps, meta(ctx), principal(ctx), req.workspaceId);
    if (result.kind === "tokens") return { tokens: tokensOf(result.tokens) };
    return { pendingLogin: pendingLoginOf(result.pending) };
  }
}
