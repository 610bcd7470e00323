import { create, type JsonObject } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type {
  AddMemberRequest,
  AdminService,
  CreateWorkspaceRequest,
  DeleteWorkspaceRequest,
  GetWorkspaceRequest,
  ListAuditEventsRequest,
  ListMembersRequest,
  ListWorkspacesRequest,
  RemoveMemberRequest,
  ResetMemberFactorsRequest,
  UpdateMemberRequest,
  UpdateWorkspaceRequest,
  UpdateWorkspaceSettingsRequest,
} from "../../../gen/keygate/v1/admin_service_pb.js";
import {
  AuditEventSchema,
  AuditOutcome,
  EmailVerificationMode,
  MembershipStatus,
  MfaMode,
  OtpLoginMode,
  PasswordResetMode,
  type WorkspaceSettings as WorkspaceSettingsMessage,
  WorkspaceSettingsSchema,
} from "../../../gen/keygate/v1/types_pb.js";
import type { WorkspaceSettings } from "../../config.js";
import { listAuditEvents } from "../../domain/admin/audit-log.js";
import {
  addMember,
  listMembers,
  type MembershipStatusValue,
  removeMember,
  resetMemberFactors,
  updateMember,
} from "../../domain/admin/members.js";
import {
  createWorkspace,
  deleteWorkspace,
  getWorkspace,
  listWorkspaces,
  updateWorkspace,
  updateWorkspaceSettings,
} from "../../domain/admin/workspaces.js";
import type { SettingsPatch } from "../../domain/admin/workspaces-settings.js";
import type { AdminDeps } from "../../domain/deps.js";
import type { AuditEventRow } from "../../domain/model.js";
import { InvalidArgumentError } from "../../errors.js";
import { meta } from "../call-context.js";
import {
  invitedUserOf,
  membershipOf,
  roleIn,
  rolesFromProto,
  userOf,
  workspaceOf,
} from "../convert.js";
import { callerOf } from "./caller.js";

// Proto enum ⇄ stored string. UNSPECIFIED means "not set"; a number the server does not know
// is passed on as is, so that validation reports it against its field.
const emailVerificationModes = {
  [EmailVerificationMode.OFF]: "off",
  [EmailVerificationMode.CODE]: "code",
  [EmailVerificationMode.LINK]: "link",
} as const satisfies Partial<
  Record<EmailVerificationMode, WorkspaceSettings["email_verification"]>
>;
const otpLoginModes = {
  [OtpLoginMode.OFF]: "off",
  [OtpLoginMode.OPTIONAL]: "optional",
  [OtpLoginMode.REQUIRED]: "required",
} as const satisfies Partial<Record<OtpLoginMode, WorkspaceSettings["otp_login"]>>;
const mfaModes = {
  [MfaMode.OFF]: "off",
  [MfaMode.OPTIONAL]: "optional",
  [MfaMode.REQUIRED]: "required",
} as const satisfies Partial<Record<MfaMode, WorkspaceSettings["mfa"]>>;
const passwordResetModes = {
  [PasswordResetMode.LINK]: "link",
  [PasswordResetMode.CODE]: "code",
} as const satisfies Partial<Record<PasswordResetMode, WorkspaceSettings["password_reset"]>>;

function enumIn(map: Record<number, string>, value: number): unknown {
  if (value === 0) return undefined;
  return map[value] ?? value;
}

function reverse<V extends string>(map: Record<number, V>, value: V): number {
  for (const [k, v] of Object.entries(map)) if (v === value) return Number(k);
  return 0;
}

/** The fields the caller set, by their stored names. */
function settingsPatchOf(s: WorkspaceSettingsMessage | undefined): SettingsPatch {
  if (!s) return {};
  const patch: SettingsPatch = {
    signup: s.signup,
    reset_password: s.resetPassword,
    magic_link: s.magicLink,
    email_verification: enumIn(emailVerificationModes, s.emailVerification),
    require_email_verification: s.requireEmailVerification,
    password_min_length: s.passwordMinLength,
    otp_login: enumIn(otpLoginModes, s.otpLogin),
    access_token_ttl_seconds: s.accessTokenTtlSeconds,
    refresh_idle_timeout_seconds: s.refreshIdleTimeoutSeconds,
    session_lifetime_seconds: s.sessionLifetimeSeconds,
    password_reset: enumIn(passwordResetModes, s.passwordReset),
    passwordless_otp: s.passwordlessOtp,
    otp_ttl_seconds: s.otpTtlSeconds,
    action_proof_required: s.actionProofRequired,
    mfa: enumIn(mfaModes, s.mfa),
    mfa_required_roles:
      s.mfaRequiredRoles.length === 0
        ? undefined
        : [...new Set(s.mfaRequiredRoles.map((r) => enumIn(rolesFromProto, r)))],
    passkey_sign_in: s.passkeySignIn,
    passwordless_only: s.passwordlessOnly,
    oauth_dynamic_registration: s.oauthDynamicRegistration,
    rate_limits:
      Object.keys(s.rateLimits).length === 0
        ? undefined
        : Object.fromEntries(
            Object.entries(s.rateLimits).map(([name, rule]) => [
              name,
              { limit: rule.limit, window_seconds: rule.windowSeconds },
            ]),
          ),
  };
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
}

/** Effective settings as keygate.v1.WorkspaceSettings, every field set. */
export function settingsOf(s: WorkspaceSettings) {
  return create(WorkspaceSettingsSchema, {
    signup: s.signup,
    resetPassword: s.reset_password,
    magicLink: s.magic_link,
    emailVerification: reverse(emailVerificationModes, s.email_verification),
    requireEmailVerification: s.require_email_verification,
    passwordMinLength: s.password_min_length,
    otpLogin: reverse(otpLoginModes, s.otp_login),
    accessTokenTtlSeconds: s.access_token_ttl_seconds,
    refreshIdleTimeoutSeconds: s.refresh_idle_timeout_seconds,
    sessionLifetimeSeconds: s.session_lifetime_seconds,
    passwordReset: reverse(passwordResetModes, s.password_reset),
    passwordlessOtp: s.passwordless_otp,
    otpTtlSeconds: s.otp_ttl_seconds,
    actionProofRequired: s.action_proof_required,
    mfa: reverse(mfaModes, s.mfa),
    mfaRequiredRoles: s.mfa_required_roles.map((r) => reverse(rolesFromProto, r)),
    passkeySignIn: s.passkey_sign_in,
    passwordlessOnly: s.passwordless_only,
    oauthDynamicRegistration: s.oauth_dynamic_registration,
    rateLimits: Object.fromEntries(
      Object.entries(s.rate_limits ?? {}).map(([name, rule]) => [
        name,
        { limit: rule.limit, windowSeconds: rule.window_seconds },
      ]),
    ),
  });
}

function statusIn(status: MembershipStatus): MembershipStatusValue | null {
  if (status === MembershipStatus.UNSPECIFIED) return null;
  if (status === MembershipStatus.ACTIVE) return "active";
  if (status === MembershipStatus.DISABLED) return "disabled";
  if (status === MembershipStatus.INVITED)
    throw new InvalidArgumentError([
      { field: "status", description: "cannot be set: AddMember invites, the invited accept" },
    ]);
  throw new InvalidArgumentError([{ field: "status", description: "is not a membership status" }]);
}

function msOf(t: Timestamp | undefined): number | null {
  if (!t) return null;
  // Out-of-range seconds become a number the domain rejects by range, never a crash here.
  return timestampMs(t);
}

function auditEventOf(e: AuditEventRow) {
  return create(AuditEventSchema, {
    id: e.id,
    type: e.type,
    workspaceId: e.workspace_id ?? "",
    userId: e.user_id ?? "",
    sessionId: e.session_id ?? "",
    actor: e.actor ?? "",
    ipAddress: e.ip_address ?? "",
    userAgent: e.user_agent ?? "",
    outcome: e.outcome === "success" ? AuditOutcome.SUCCESS : AuditOutcome.FAILURE,
    details: e.details as JsonObject,
    createTime: timestampFromMs(Math.floor(e.created_at)),
    requestId: e.request_id ?? "",
  });
}

/** AdminService RPCs about workspaces, their members and the audit log. */
export function adminWorkspacesHandlers(deps: AdminDeps) {
  return {
    async createWorkspace(req: CreateWorkspaceRequest, ctx: HandlerContext) {
      const created = await createWorkspace(deps, meta(ctx), callerOf(ctx), {
        name: req.name,
        slug: req.slug,
        settings: settingsPatchOf(req.settings),
        ownerUserId: req.ownerUserId,
      });
      return { workspace: workspaceOf(created.workspace), settings: settingsOf(created.settings) };
    },

    async getWorkspace(req: GetWorkspaceRequest, ctx: HandlerContext) {
      const found = await getWorkspace(deps, callerOf(ctx), req.workspaceId);
      return { workspace: workspaceOf(found.workspace), settings: settingsOf(found.settings) };
    },

    async listWorkspaces(req: ListWorkspacesRequest, ctx: HandlerContext) {
      const page = await listWorkspaces(deps, callerOf(ctx), req);
      return { workspaces: page.workspaces.map(workspaceOf), nextPageToken: page.nextPageToken };
    },

    async updateWorkspace(req: UpdateWorkspaceRequest, ctx: HandlerContext) {
      const row = await updateWorkspace(deps, meta(ctx), callerOf(ctx), req);
      return { workspace: workspaceOf(row) };
    },

    async updateWorkspaceSettings(req: UpdateWorkspaceSettingsRequest, ctx: HandlerContext) {
      const settings = await updateWorkspaceSettings(deps, meta(ctx), callerOf(ctx), {
        workspaceId: req.workspaceId,
        settings: settingsPatchOf(req.settings),
        resetPaths: req.resetMask?.paths ?? [],
      });
      return { settings: settingsOf(settings) };
    },

    async deleteWorkspace(req: DeleteWorkspaceRequest, ctx: HandlerContext) {
      await deleteWorkspace(deps, meta(ctx), callerOf(ctx), req.workspaceId);
      return {};
    },

    async addMember(req: AddMemberRequest, ctx: HandlerContext) {
      const row = await addMember(deps, meta(ctx), callerOf(ctx), {
        workspaceId: req.workspaceId,
        userId: req.userId,
        email: req.email,
        role: roleIn(req.role) ?? "member",
      });
      return { membership: membershipOf(row, true) };
    },

    async updateMember(req: UpdateMemberRequest, ctx: HandlerContext) {
      const row = await updateMember(deps, meta(ctx), callerOf(ctx), {
        workspaceId: req.workspaceId,
        userId: req.userId,
        role: roleIn(req.role) ?? null,
        status: statusIn(req.status),
      });
      return { membership: membershipOf(row, true) };
    },

    async resetMemberFactors(req: ResetMemberFactorsRequest, ctx: HandlerContext) {
      const removed = await resetMemberFactors(deps, meta(ctx), callerOf(ctx), req);
      return {
        passkeysRemoved: removed.passkeys,
        totpRemoved: removed.totp,
        recoveryCodesRemoved: removed.recoveryCodes,
      };
    },

    async removeMember(req: RemoveMemberRequest, ctx: HandlerContext) {
      await removeMember(deps, meta(ctx), callerOf(ctx), req);
      return {};
    },

    async listMembers(req: ListMembersRequest, ctx: HandlerContext) {
      const page = await listMembers(deps, callerOf(ctx), req);
      return {
        memberships: page.members.map((m) => {
          const membership = membershipOf(m, true);
          if (m.user)
            membership.user =
              m.status === "invited"
                ? invitedUserOf(m.user)
                : userOf({ ...m.user, metadata: m.metadata });
          return membership;
        }),
        nextPageToken: page.nextPageToken,
      };
    },

    async listAuditEvents(req: ListAuditEventsRequest, ctx: HandlerContext) {
      const page = await listAuditEvents(deps, callerOf(ctx), {
        workspaceId: req.workspaceId,
        pageSize: req.pageSize,
        pageToken: req.pageToken,
        types: req.types,
        userId: req.userId,
        startMs: msOf(req.startTime),
        endMs: msOf(req.endTime),
      });
      return { events: page.events.map(auditEventOf), nextPageToken: page.nextPageToken };
    },
  } satisfies Partial<ServiceImpl<typeof AdminService>>;
}
