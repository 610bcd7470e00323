import { isMessage } from "@bufbuild/protobuf";
import {
  type Client,
  Code,
  ConnectError,
  createContextKey,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import type { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { TokensSchema } from "../../gen/keygate/v1/types_pb.js";
import { errorReason } from "./errors.js";
import { type StoredTokens, storedTokensOf, type TokenStore } from "./tokens.js";

/** Marks the client's own Refresh call, which the interceptor passes through untouched. */
const ownRefreshKey = createContextKey(false, { description: "keygate client refresh" });

const refreshMethod = "keygate.v1.AuthService/Refresh";
const logoutMethod = "keygate.v1.AuthService/Logout";

/** How many retired refresh tokens are remembered; a client only ever holds one at a time. */
const retiredLimit = 32;

/**
 * Keeps a session's tokens fresh. Refreshes are single-flight: callers that need a refresh
 * while one is running wait for it, and a refresh token that was exchanged once is never
 * presented again (the server would take a second use as theft and end the session).
 */
export class TokenRefresher {
  private inflight: Promise<StoredTokens | undefined> | undefined;
  private readonly retired = new Set<string>();
  auth: Pick<Client<typeof AuthService>, "refresh"> | undefined;

  constructor(
    readonly store: TokenStore,
    private readonly now: () => number,
    private readonly leewayMs: number,
  ) {}

  /** The stored tokens, refreshed first when the access token is about to expire. */
  async current(): Promise<StoredTokens | undefined> {
    const tokens = await this.store.get();
    if (!tokens || tokens.accessTokenExpiresAt - this.now() > this.leewayMs) return tokens;
    try {
      return await this.refresh(tokens.accessToken);
    } catch (error) {
      // The session has ended: go on signed out (public calls still work; signed-in ones
      // answer UNAUTHENTICATED). Anything else (network) is the call's problem too.
      if (ConnectError.from(error).code === Code.Unauthenticated) return undefined;
      return tokens;
    }
  }

  /**
   * Tokens newer than the ones that carried `staleAccessToken`: the result of a refresh that
   * already happened, the one in flight, or a new one. Throws the refresh's error when the
   * session is over (the store is then emptied).
   */
  async refresh(staleAccessToken: string): Promise<StoredTokens | undefined> {
    if (this.inflight) return this.inflight;
    const tokens = await this.store.get();
    // Reading the store may have let another refresh start or finish.
    if (this.inflight) return this.inflight;
    if (!tokens) return undefined;
    if (tokens.accessToken !== staleAccessToken) return tokens;
    // Exchanged already (the store is updated before a token is retired): never again.
    if (this.retired.has(tokens.refreshToken)) return undefined;
    const run = this.exchange(tokens);
    this.inflight = run;
    try {
      return await run;
    } finally {
      this.inflight = undefined;
    }
  }

  /** Notes a refresh token that was exchanged elsewhere (a Refresh the caller made itself). */
  retire(refreshToken: string) {
    this.retired.add(refreshToken);
    if (this.retired.size > retiredLimit) {
      const oldest = this.retired.values().next().value;
      if (oldest !== undefined) this.retired.delete(oldest);
    }
  }

  private async exchange(tokens: StoredTokens): Promise<StoredTokens> {
    if (!this.auth) throw new Error("TokenRefresher used before its client was set");
    try {
      const res = await this.auth.refresh(
        { refreshToken: tokens.refreshToken },
        { contextValues: createContextValues().set(ownRefreshKey, true) },
      );
      if (!res.tokens) throw new ConnectError("Refresh answered no tokens", Code.Internal);
      const next = storedTokensOf(res.tokens);
      await this.store.set(next);
      this.retire(tokens.refreshToken);
      return next;
    } catch (error) {
      const ce = ConnectError.from(error);
      if (ce.code === Code.Unauthenticated) {
        this.retire(tokens.refreshToken);
        // Only forget the session if nobody stored another one meanwhile (a new login).
        const stored = await this.store.get();
        if (stored?.refreshToken === tokens.refreshToken) await this.store.set(undefined);
      }
      throw ce;
    }
  }
}

export interface SessionInterceptorOptions {
  readonly refresher: TokenRefresher;
  /** Sent as x-workspace-id while no session is stored (a session's own workspace wins). */
  readonly workspaceId: string | undefined;
  /** An admin key: sent as the bearer credential instead of any session. */
  readonly adminKey: string | undefined;
}

/**
 * Sets x-workspace-id and Authorization on every call, keeps tokens that calls answer
 * (Login, VerifyOtp, ConsumeMagicLink, SwitchWorkspace, AcceptInvitation, Refresh) in the
 * store, forgets them on Logout, and retries a unary call once after a refresh when the
 * access token was refused. Headers the caller set explicitly are left alone.
 */
export function sessionInterceptor(options: SessionInterceptorOptions): Interceptor {
  const { refresher } = options;
  return (next) => async (req) => {
    if (req.contextValues.get(ownRefreshKey)) return next(req);
    const method = `${req.service.typeName}/${req.method.name}`;
    const callerAuthorization = req.header.has("authorization");
    const callerWorkspace = req.header.has("x-workspace-id");

    if (options.adminKey !== undefined) {
      if (!callerAuthorization) req.header.set("authorization", `Bearer ${options.adminKey}`);
      if (!callerWorkspace && options.workspaceId)
        req.header.set("x-workspace-id", options.workspaceId);
      return next(req);
    }

    const apply = (tokens: StoredTokens | undefined) => {
      if (!callerAuthorization) {
        if (tokens) req.header.set("authorization", `Bearer ${tokens.accessToken}`);
        else req.header.delete("authorization");
      }
      if (!callerWorkspace) {
        const workspace = tokens?.workspaceId || options.workspaceId;
        if (workspace) req.header.set("x-workspace-id", workspace);
        else req.header.delete("x-workspace-id");
      }
    };
    const keep = async (message: unknown) => {
      const tokens = tokensIn(message);
      if (tokens) await refresher.store.set(storedTokensOf(tokens));
    };

    if (method === refreshMethod) {
      // A Refresh the caller makes itself: its token is spent either way.
      const presented = (req.message as { refreshToken?: string } | undefined)?.refreshToken;
      try {
        const res = await next(req);
        if (!res.stream) await keep(res.message);
        return res;
      } finally {
        if (presented) refresher.retire(presented);
      }
    }

    const tokens = callerAuthorization ? undefined : await refresher.current();
    apply(tokens);
    try {
      const res = await next(req);
      if (!res.stream) await afterSuccess(method, req.message, res.message);
      return res;
    } catch (error) {
      if (
        !tokens ||
        req.stream ||
        !(error instanceof ConnectError) ||
        error.code !== Code.Unauthenticated ||
        errorReason(error) !== "UNAUTHENTICATED"
      )
        throw error;
      const fresh = await refresher.refresh(tokens.accessToken);
      if (!fresh) throw error;
      apply(fresh);
      const res = await next(req);
      if (!res.stream) await afterSuccess(method, req.message, res.message);
      return res;
    }

    async function afterSuccess(name: string, request: unknown, response: unknown) {
      if (name === logoutMethod) {
        const given = (request as { refreshToken?: string } | undefined)?.refreshToken;
        const stored = await refresher.store.get();
        if (stored && (!given || given === stored.refreshToken)) {
          refresher.retire(stored.refreshToken);
          await refresher.store.set(undefined);
        }
        return;
      }
      await keep(response);
    }
  };
}

/** The Tokens a response carries, in a `tokens` field or a `result` oneof. */
function tokensIn(message: unknown) {
  if (typeof message !== "object" || message === null) return undefined;
  const m = message as { tokens?: unknown; result?: { case?: string; value?: unknown } };
  if (isMessage(m.tokens, TokensSchema)) return m.tokens;
  if (m.result?.case === "tokens" && isMessage(m.result.value, TokensSchema)) return m.result.value;
  return undefined;
}
