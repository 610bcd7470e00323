import type { Clock } from "./clock.js";
import type { Config } from "./config.js";
import type { AdminDeps, AuthDeps } from "./domain/deps.js";
import type { Introspector } from "./domain/introspection.js";
import type { ProviderDeps } from "./domain/oauth/authorize.js";
import type { TokenDeps } from "./domain/oauth/token.js";
import type { RevocationState } from "./domain/revocations.js";
import { adminGrantsHandlers } from "./handlers/admin/grants.js";
import { adminKeysHandlers } from "./handlers/admin/keys.js";
import { adminOAuthClientsHandlers } from "./handlers/admin/oauth-clients.js";
import { adminUsersHandlers } from "./handlers/admin/users.js";
import { adminWorkspacesHandlers } from "./handlers/admin/workspaces.js";
import { AuthServiceHandler } from "./handlers/auth-service.js";
import { envoyAuthorizationHandlers } from "./handlers/envoy-authz.js";
import { FactorServiceHandler } from "./handlers/factor-service.js";
import { HealthService } from "./handlers/health.js";
import { oauthServiceHandlers } from "./handlers/oauth-service.js";
import { OtpServiceHandler } from "./handlers/otp-service.js";
import { tokenIntrospectionHandlers } from "./handlers/token-introspection.js";
import type { Readiness } from "./readiness.js";
import { type Handlers, keygateServices } from "./routes.js";

/** Which handler serves each service, over the dependencies composeKeygate built. */
export function keygateHandlers(deps: {
  config: Config;
  clock: Clock;
  readiness: Readiness;
  authDeps: AuthDeps;
  adminDeps: AdminDeps;
  providerDeps: TokenDeps & ProviderDeps;
  issuerBase: string;
  jwks: Parameters<typeof tokenIntrospectionHandlers>[0]["jwks"];
  introspector: Introspector;
  pool: AuthDeps["pool"];
  revocations: RevocationState;
}): Handlers {
  const { config, clock, readiness, authDeps, adminDeps, providerDeps, issuerBase } = deps;
  const { jwks, introspector, revocations } = deps;
  return {
    health: new HealthService(
      readiness,
      new Set(keygateServices.map((s) => s.typeName)),
      config.streams.watchMaxAgeMs,
    ),
    auth: new AuthServiceHandler(authDeps),
    otp: new OtpServiceHandler(authDeps),
    factors: new FactorServiceHandler(authDeps),
    admin: {
      ...adminUsersHandlers(adminDeps),
      ...adminWorkspacesHandlers(adminDeps),
      ...adminKeysHandlers(adminDeps),
      ...adminOAuthClientsHandlers(adminDeps, issuerBase),
      ...adminGrantsHandlers(adminDeps),
    },
    oauth: oauthServiceHandlers(providerDeps),
    introspection: tokenIntrospectionHandlers({
      jwks,
      introspector,
      feed: {
        pool: deps.pool,
        clock,
        revocations,
        heartbeatMs: config.revocation.heartbeatMs,
        draining: () => readiness.isDraining,
      },
      watchMaxAgeMs: config.streams.watchMaxAgeMs,
    }),
    envoy: envoyAuthorizationHandlers(introspector),
  };
}
