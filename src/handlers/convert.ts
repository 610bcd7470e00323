import type { JsonObject } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ActionProofSchema } from "../../gen/keygate/v1/otp_service_pb.js";
import {
  FactorType,
  GrantSchema,
  MembershipSchema,
  MembershipStatus,
  OtpPurpose,
  PendingLoginSchema,
  Role,
  SessionSchema,
  TokensSchema,
  UserSchema,
  WorkspaceSchema,
} from "../../gen/keygate/v1/types_pb.js";
import type {
  Role as DomainRole,
  GrantRow,
  MembershipRow,
  SessionRow,
  UserRow,
  WorkspaceRow,
} from "../domain/model.js";
import type { FactorKind, PendingLoginView } from "../domain/second-step.js";
import type { IssuedTokens } from "../domain/sessions.js";
import { InvalidArgumentError } from "../errors.js";

/** Proto ⇄ domain mapping shared by the handlers. */

const roleToProto: Record<DomainRole, Role> = {
  owner: Role.OWNER,
  admin: Role.ADMIN,
  member: Role.MEMBER,
};

export function roleOf(role: DomainRole): Role {
  return roleToProto[role];
}

/** The domain role of each proto role; UNSPECIFIED has none. */
export const rolesFromProto = {
  [Role.OWNER]: "owner",
  [Role.ADMIN]: "admin",
  [Role.MEMBER]: "member",
} as const satisfies Partial<Record<Role, DomainRole>>;

/**
 * A role given in a request. The one rule for UNSPECIFIED: it is undefined here and the call
 * says what leaving the role out means (a new member is a member, an update keeps the role).
 * A number the enum does not have is INVALID_ARGUMENT on `field`.
 */
export function roleIn(role: Role, field = "role"): DomainRole | undefined {
  if (role === Role.UNSPECIFIED) return undefined;
  const value = (rolesFromProto as Partial<Record<Role, DomainRole>>)[role];
  if (!value) throw new InvalidArgumentError([{ field, description: "is not a known role" }]);
  return value;
}

export function tokensOf(t: IssuedTokens) {
  return create(TokensSchema, {
    accessToken: t.accessToken,
    accessTokenExpireTime: timestampFromMs(Math.floor(t.accessTokenExpiresAt.getTime())),
    refreshToken: t.refreshToken,
    refreshTokenExpireTime: timestampFromMs(Math.floor(t.refreshTokenExpiresAt.getTime())),
    tokenType: "Bearer",
    sessionId: t.sessionId,
    userId: t.userId,
    workspaceId: t.workspaceId,
    role: roleOf(t.role),
    amr: [...t.amr],
    acr: t.acr,
  });
}

const factorKinds: Record<FactorKind, FactorType> = {
  email_code: FactorType.EMAIL_CODE,
  totp: FactorType.TOTP,
  passkey: FactorType.PASSKEY,
  recovery_code: FactorType.RECOVERY_CODE,
};

export function pendingLoginOf(p: PendingLoginView) {
  return create(PendingLoginSchema, {
    pendingLoginId: p.pendingLoginId,
    expireTime: timestampFromMs(p.expiresAt.getTime()),
    purpose: OtpPurpose.LOGIN_SECOND_STEP,
    factors: p.factors.map((f) => factorKinds[f]),
    enrollmentRequired: p.enrollmentRequired,
  });
}

export function userOf(u: UserRow) {
  return create(UserSchema, {
    id: u.id,
    email: u.email,
    emailVerified: u.email_verified,
    blocked: u.blocked,
    metadata: u.metadata as JsonObject,
    createTime: timestampFromMs(Math.floor(u.created_at)),
    updateTime: timestampFromMs(Math.floor(u.updated_at)),
  });
}

export function workspaceOf(
  w: Pick<WorkspaceRow, "id" | "name" | "slug" | "created_at" | "updated_at">,
) {
  return create(WorkspaceSchema, {
    id: w.id,
    name: w.name,
    slug: w.slug,
    createTime: timestampFromMs(Math.floor(w.created_at)),
    updateTime: timestampFromMs(Math.floor(w.updated_at)),
  });
}

export function sessionOf(s: SessionRow, currentSessionId: string) {
  return create(SessionSchema, {
    id: s.id,
    workspaceId: s.workspace_id,
    userId: s.user_id,
    ipAddress: s.ip_address ?? "",
    userAgent: s.user_agent ?? "",
    createTime: timestampFromMs(Math.floor(s.created_at)),
    lastUseTime: timestampFromMs(Math.floor(s.last_used_at)),
    expireTime: timestampFromMs(Math.floor(s.expires_at)),
    current: s.id === currentSessionId,
    amr: s.amr,
    clientId: s.client_id ?? "",
  });
}

export function grantOf(g: GrantRow) {
  return create(GrantSchema, {
    clientId: g.client_id,
    clientName: g.client_name,
    workspaceId: g.workspace_id,
    userId: g.user_id,
    scopes: g.scopes,
    createTime: timestampFromMs(Math.floor(g.created_at)),
    lastUseTime: timestampFromMs(Math.floor(g.last_used_at)),
    sessionCount: g.session_count,
  });
}

const statusToProto: Record<MembershipRow["status"], MembershipStatus> = {
  active: MembershipStatus.ACTIVE,
  disabled: MembershipStatus.DISABLED,
  invited: MembershipStatus.INVITED,
};

/**
 * What a workspace sees of an account it invited and that has not accepted: the id and the
 * address it asked for, nothing of the account's state (SECURITY.md 30).
 */
export function invitedUserOf(u: Pick<UserRow, "id" | "email_normalized">) {
  // The folded address: the stored spelling of an existing account would differ from what
  // the workspace typed where a new account's would not, telling the two apart.
  return create(UserSchema, { id: u.id, email: u.email_normalized });
}

/** A membership; with `withMetadata`, the workspace's own object for the member (admin answers). */
export function membershipOf(
  m: MembershipRow & { workspace?: Parameters<typeof workspaceOf>[0] },
  withMetadata = false,
) {
  return create(MembershipSchema, {
    workspaceId: m.workspace_id,
    userId: m.user_id,
    role: roleOf(m.role),
    status: statusToProto[m.status],
    ...(withMetadata ? { metadata: m.metadata as JsonObject } : {}),
    createTime: timestampFromMs(Math.floor(m.created_at)),
    updateTime: timestampFromMs(Math.floor(m.updated_at)),
    ...(m.workspace ? { workspace: workspaceOf(m.workspace) } : {}),
  });
}

/** A sensitive action's proof, as OtpService and FactorService answer it. */
export function actionProofOf(p: { proof: string; expiresAt: Date }) {
  return create(ActionProofSchema, {
    proof: p.proof,
    expireTime: timestampFromMs(p.expiresAt.getTime()),
  });
}

/** Tokens, or an action proof: the answer of a factor or code check. */
export function tokensOrProofOf(
  res:
    | { kind: "tokens"; tokens: IssuedTokens }
    | { kind: "action_proof"; proof: string; expiresAt: Date },
) {
  return res.kind === "tokens"
    ? { result: { case: "tokens" as const, value: tokensOf(res.tokens) } }
    : { result: { case: "actionProof" as const, value: actionProofOf(res) } };
}
