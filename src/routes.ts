import {
  type ConnectRouter,
  createServiceImplSpec,
  type MethodImplSpec,
  type ServiceImpl,
} from "@connectrpc/connect";
import { Authorization } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { FactorService } from "../gen/keygate/v1/factor_service_pb.js";
import { OAuthService } from "../gen/keygate/v1/oauth_service_pb.js";
import { OtpService } from "../gen/keygate/v1/otp_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";

export interface Handlers {
  readonly health: ServiceImpl<typeof Health>;
  // Every RPC of every service: one left out is a compile error, not an UNIMPLEMENTED answer.
  readonly auth: ServiceImpl<typeof AuthService>;
  readonly otp: ServiceImpl<typeof OtpService>;
  readonly factors: ServiceImpl<typeof FactorService>;
  readonly admin: ServiceImpl<typeof AdminService>;
  readonly oauth: ServiceImpl<typeof OAuthService>;
  readonly introspection: ServiceImpl<typeof TokenIntrospectionService>;
  /** Envoy's external authorization protocol (ext_authz over gRPC). */
  readonly envoy: ServiceImpl<typeof Authorization>;
}

export const keygateServices = [
  AuthService,
  OtpService,
  FactorService,
  AdminService,
  OAuthService,
  TokenIntrospectionService,
  Authorization,
];

export function routes(handlers: Handlers) {
  return (router: ConnectRouter) => {
    router.service(Health, handlers.health);
    router.service(AuthService, handlers.auth);
    router.service(OtpService, handlers.otp);
    router.service(FactorService, handlers.factors);
    router.service(AdminService, handlers.admin);
    router.service(OAuthService, handlers.oauth);
    router.service(TokenIntrospectionService, handlers.introspection);
    router.service(Authorization, handlers.envoy);
  };
}

/**
 * The unary RPCs a gateway calls on every request it passes, which the lean lane serves when
 * KEYGATE_FAST_LANE is on (src/http/fast-lane.ts): the same implementations routes() registers.
 */
export function hotMethods(handlers: Handlers): MethodImplSpec[] {
  const introspection = createServiceImplSpec<typeof TokenIntrospectionService>(
    TokenIntrospectionService,
    handlers.introspection,
  ).methods;
  const envoy = createServiceImplSpec<typeof Authorization>(Authorization, handlers.envoy).methods;
  return [
    introspection.introspect,
    introspection.introspectBatch,
    introspection.getJwks,
    envoy.check,
  ].filter((spec): spec is MethodImplSpec => spec !== undefined);
}
