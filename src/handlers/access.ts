import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Authorization } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { FactorService } from "../../gen/keygate/v1/factor_service_pb.js";
import { OAuthService } from "../../gen/keygate/v1/oauth_service_pb.js";
import { OtpService } from "../../gen/keygate/v1/otp_service_pb.js";
import { TokenIntrospectionService } from "../../gen/keygate/v1/token_introspection_service_pb.js";

/**
 * Who may call an RPC, one entry per method of every service (test/access.test.ts holds
 * that none is missing), read by the two authentication interceptors:
 * - `public`: anyone; an authorization header is not read.
 * - `signed_in`: a user's access token, refused without one (authnInterceptor).
 * - `signed_in_optional`: a user's access token when one is sent, checked then; the flow
 *   decides what it does without one (a pending login, a public sign-in).
 * - `admin`: an admin key, or a user's access token whose role the RPC then weighs
 *   (adminAuthnInterceptor).
 */
export type Access = "public" | "signed_in" | "signed_in_optional" | "admin";

const entries: readonly (readonly [DescMethod, Access])[] = [
  [AuthService.method.signUp, "public"],
  [AuthService.method.login, "public"],
  [AuthService.method.refresh, "public"],
  [AuthService.method.logout, "signed_in_optional"],
  [AuthService.method.getSession, "signed_in"],
  [AuthService.method.listSessions, "signed_in"],
  [AuthService.method.revokeSession, "signed_in"],
  [AuthService.method.listGrants, "signed_in"],
  [AuthService.method.revokeGrant, "signed_in"],
  [AuthService.method.changePassword, "signed_in"],
  [AuthService.method.requestPasswordReset, "public"],
  [AuthService.method.resetPassword, "public"],
  [AuthService.method.sendEmailVerification, "signed_in_optional"],
  [AuthService.method.verifyEmail, "public"],
  [AuthService.method.requestMagicLink, "public"],
  [AuthService.method.consumeMagicLink, "public"],
  [AuthService.method.listMyWorkspaces, "signed_in"],
  [AuthService.method.switchWorkspace, "signed_in"],
  [AuthService.method.acceptInvitation, "public"],

  // SENSITIVE_ACTION needs a token, the other purposes none.
  [OtpService.method.sendOtp, "signed_in_optional"],
  [OtpService.method.verifyOtp, "signed_in_optional"],

  [FactorService.method.listFactors, "signed_in"],
  // Enrollment also works with an enrollment pending login.
  [FactorService.method.enrollTotp, "signed_in_optional"],
  [FactorService.method.confirmTotp, "signed_in_optional"],
  [FactorService.method.removeTotp, "signed_in"],
  [FactorService.method.regenerateRecoveryCodes, "signed_in"],
  [FactorService.method.beginPasskeyRegistration, "signed_in_optional"],
  [FactorService.method.finishPasskeyRegistration, "signed_in_optional"],
  [FactorService.method.renamePasskey, "signed_in"],
  [FactorService.method.deletePasskey, "signed_in"],
  // Public for a second step or a username-less sign-in, signed in for an action proof.
  [FactorService.method.beginPasskeyAuthentication, "signed_in_optional"],
  [FactorService.method.finishPasskeyAuthentication, "signed_in_optional"],
  [FactorService.method.verifyFactor, "signed_in_optional"],
  [FactorService.method.updateFactorPreferences, "signed_in"],

  ...AdminService.methods.map((m) => [m, "admin"] as const),

  // The provider's sign-in step: anyone holding the request's id may look at it or decline
  // it; only a user signed in to the request's workspace may accept it. Looking with that
  // user's token also tells whether they consented to the client before.
  [OAuthService.method.getAuthorizationRequest, "signed_in_optional"],
  [OAuthService.method.acceptAuthorizationRequest, "signed_in"],
  [OAuthService.method.rejectAuthorizationRequest, "public"],

  [TokenIntrospectionService.method.introspect, "admin"],
  [TokenIntrospectionService.method.introspectBatch, "admin"],
  [TokenIntrospectionService.method.revokeToken, "admin"],
  // The public keys: anyone may verify tokens.
  [TokenIntrospectionService.method.getJwks, "public"],
  [TokenIntrospectionService.method.watchRevocations, "admin"],

  [Authorization.method.check, "admin"],

  [Health.method.check, "public"],
  [Health.method.watch, "public"],
];

const table = new Map(entries.map(([m, access]) => [`${m.parent.typeName}/${m.name}`, access]));

/**
 * The access of a method, by its service's type name and the method's proto name (what an
 * interceptor sees); undefined for a method the table does not list, which the interceptors
 * refuse.
 */
export function accessOf(
  service: Pick<DescService, "typeName">,
  method: string,
): Access | undefined {
  return table.get(`${service.typeName}/${method}`);
}
