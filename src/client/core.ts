import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { FactorService } from "../../gen/keygate/v1/factor_service_pb.js";
import { OAuthService } from "../../gen/keygate/v1/oauth_service_pb.js";
import { OtpService } from "../../gen/keygate/v1/otp_service_pb.js";
import { TokenIntrospectionService } from "../../gen/keygate/v1/token_introspection_service_pb.js";
import { sessionInterceptor, TokenRefresher } from "./session.js";
import { memoryTokenStore, type TokenStore } from "./tokens.js";

/** What both entries (Node and browser) accept besides the transport. */
export interface KeygateClientCommonOptions {
  /** Keygate's URL, e.g. `http://127.0.0.1:8080`. */
  readonly baseUrl: string;
  /** Sent as x-workspace-id while no session is stored; a session's own workspace wins. */
  readonly workspaceId?: string;
  /**
   * An admin key (`kg_…`) for internal callers: sent as the bearer credential on every call,
   * and the token store is not used.
   */
  readonly adminKey?: string;
  /** Where tokens are kept; memory by default. */
  readonly tokens?: TokenStore;
  /** Refresh when the access token has less than this left. Default 60 000 ms. */
  readonly refreshBeforeExpiryMs?: number;
  /** The client's clock, in milliseconds since the epoch. Default `Date.now`. */
  readonly now?: () => number;
  /** More interceptors, run inside the one that sets credentials (they see its headers). */
  readonly interceptors?: readonly Interceptor[];
}

/** Typed clients for Keygate's services, sharing one session. */
export interface KeygateClient {
  readonly auth: Client<typeof AuthService>;
  readonly otp: Client<typeof OtpService>;
  readonly factors: Client<typeof FactorService>;
  readonly admin: Client<typeof AdminService>;
  /** The sign-in step of a workspace's OpenID Provider (a sign-in page's own UI). */
  readonly oauth: Client<typeof OAuthService>;
  readonly introspection: Client<typeof TokenIntrospectionService>;
  /** The store the session lives in: read it to know who is signed in, clear it to forget. */
  readonly tokens: TokenStore;
  readonly transport: Transport;
}

/** Builds the clients over a transport made by the entry (connect-node or connect-web). */
export function buildKeygateClient(
  options: KeygateClientCommonOptions,
  makeTransport: (interceptors: Interceptor[]) => Transport,
): KeygateClient {
  const store = options.tokens ?? memoryTokenStore();
  const refresher = new TokenRefresher(
    store,
    options.now ?? Date.now,
    options.refreshBeforeExpiryMs ?? 60_000,
  );
  const transport = makeTransport([
    sessionInterceptor({
      refresher,
      workspaceId: options.workspaceId,
      adminKey: options.adminKey,
    }),
    ...(options.interceptors ?? []),
  ]);
  const auth = createClient(AuthService, transport);
  refresher.auth = auth;
  return {
    auth,
    otp: createClient(OtpService, transport),
    factors: createClient(FactorService, transport),
    admin: createClient(AdminService, transport),
    oauth: createClient(OAuthService, transport),
    introspection: createClient(TokenIntrospectionService, transport),
    tokens: store,
    transport,
  };
}
