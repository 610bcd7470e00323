import type { CallLog } from "../call-log.js";
import type { Caller } from "../domain/admin-auth.js";
import type { RequestMeta } from "../domain/deps.js";
import type { Introspection, Introspector, TokenTypeHint } from "../domain/introspection.js";
import { OAuthProtocolError } from "../domain/oauth/errors.js";
import { DomainError, InvalidArgumentError, RateLimitedError } from "../errors.js";
import { classifyError } from "../interceptors/classify-error.js";
import type { Logger } from "../log.js";
import { json } from "./endpoints.js";
import { clientSecretOf, invalidClient, OAuthError, readForm, single } from "./oauth-requests.js";
import type { NodeServerRequest, NodeServerResponse } from "./types.js";

type Req = NodeServerRequest;
type Res = NodeServerResponse;
type Handler = (req: Req, res: Res) => Promise<void>;

export const introspectionPath = "/oauth2/introspect";
export const revocationPath = "/oauth2/revoke";
export const metadataPath = "/.well-known/oauth-authorization-server";

export interface OAuthDeps {
  /** The configured public issuer URL: the tokens' `iss` and the base of every URL served. */
  readonly issuer: string;
  readonly introspector: Pick<Introspector, "introspect" | "revoke">;
  /**
   * Authenticates an admin key; `beforeLookup` runs only when the key has to be looked up in
   * the database (a key not seen in the last second, or a wrong one), to rate-limit that.
   */
  authenticate(secret: string, beforeLookup: () => Promise<void>): Promise<Caller>;
  /** Counts one client-key lookup for this client IP; throws RateLimitedError when full. */
  limitClientLookup(ipAddress: string): Promise<void>;
}

/**
 * RFC 7662 introspection, RFC 7009 revocation and RFC 8414 metadata over plain HTTP: thin
 * adapters over the same Introspector as the RPCs, authenticated with admin keys as OAuth
 * clients. Answers by path (exact); the caller sends everything else elsewhere.
 */
export function oauthEndpoints(
  deps: OAuthDeps & {
    readonly logger: Logger;
    /** Where the call lines go (successful introspections sampled); every line when absent. */
    readonly callLog?: CallLog;
    readonly maxRequestBytes: number;
    requestMeta(req: Req): RequestMeta;
  },
): ReadonlyMap<string, Handler> {
  const issuer = deps.issuer.replace(/\/+$/, "");
  const metadata = Object.freeze({
    issuer: deps.issuer,
    jwks_uri: `${issuer}/.well-known/jwks.json`,
    introspection_endpoint: `${issuer}${introspectionPath}`,
    revocation_endpoint: `${issuer}${revocationPath}`,
    introspection_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
    revocation_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
    // RFC 8414 requires response_types_supported; Keygate has no authorization endpoint and
    // no token endpoint (tokens come from AuthService), so it supports no response or grant type.
    response_types_supported: [],
    grant_types_supported: [],
    token_endpoint_auth_methods_supported: [],
  });

  const logged = oauthCallLogger(deps);

  /** Client authentication (RFC 6749 section 2.3.1), then the form's token. */
  async function authorized(req: Req, meta: RequestMeta) {
    const form = await readForm(req, deps.maxRequestBytes);
    const secret = clientSecretOf(req.headers.authorization, form);
    const caller = await deps.authenticate(secret, () =>
      deps.limitClientLookup(meta.ipAddress ?? "unknown"),
    );
    const token = single(form, "token") ?? "";
    if (token === "") throw new OAuthError(400, "invalid_request", "token is required");
    const hint = single(form, "token_type_hint");
    return {
      caller,
      request: {
        token,
        // RFC 7662 section 2.1: an unknown hint is no reason to fail; the search covers all types.
        hint: (hint === "access_token" || hint === "refresh_token" ? hint : null) as TokenTypeHint,
        // Keygate's extension: the RFC 8707 resource the caller protects (docs/introspection.md).
        resource: single(form, "resource"),
        workspaceId: single(form, "workspace_id"),
      },
    };
  }
  const noStore = { "cache-control": "no-store", pragma: "no-cache" };
  const postOnly = (req: Req) => {
    if (req.method !== "POST") {
      throw new OAuthError(405, "invalid_request", "use POST", { allow: "POST" });
    }
  };

  const metadataHandler = logged(metadataPath, async (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      throw new OAuthError(405, "invalid_request", "use GET", { allow: "GET, HEAD" });
    }
    json(res, 200, metadata, {
      "cache-control": "public, max-age=3600",
      "access-control-allow-origin": "*",
    });
  });

  const routes = new Map<string, Handler>([
    [
      introspectionPath,
      logged(introspectionPath, async (req, res, meta) => {
        postOnly(req);
        const { caller, request } = await authorized(req, meta);
        const answer = await deps.introspector.introspect(caller, request);
        json(res, 200, introspectionJson(answer), noStore);
      }),
    ],
    [
      revocationPath,
      logged(revocationPath, async (req, res, meta) => {
        postOnly(req);
        const { caller, request } = await authorized(req, meta);
        await deps.introspector.revoke(caller, meta, request);
        // RFC 7009 section 2.2: 200 whether or not the token was known; the body is ignored.
        res.statusCode = 200;
        for (const [name, value] of Object.entries(noStore)) res.setHeader(name, value);
        res.setHeader("content-length", 0);
        res.end();
      }),
    ],
    [metadataPath, metadataHandler],
  ]);
  // RFC 8414 section 3.1: for an issuer with a path, the well-known segment goes before it.
  const issuerPath = new URL(deps.issuer).pathname.replace(/\/+$/, "");
  if (issuerPath !== "") routes.set(`${metadataPath}${issuerPath}`, metadataHandler);
  return routes;
}

/**
 * One log line per call, like the RPCs' (never the token, the code or the client secret),
 * and the RFC 6749 error answer for a failure that has not answered yet.
 */
export function oauthCallLogger(deps: {
  readonly logger: Logger;
  readonly callLog?: CallLog;
  requestMeta(req: Req): RequestMeta;
}) {
  return (
    name: string,
    handle: (req: Req, res: Res, meta: RequestMeta) => Promise<void>,
  ): Handler =>
    async (req, res) => {
      const started = performance.now();
      const meta = deps.requestMeta(req);
      let failure: unknown;
      try {
        await handle(req, res, meta);
      } catch (error) {
        failure = error;
        if (!res.headersSent) writeError(res, error);
        else res.end();
      }
      const method = `${req.method} ${name}`;
      const line = () => ({
        requestId: meta.requestId,
        method,
        protocol: req.headers["content-type"],
        peer: meta.ipAddress ?? undefined,
        durationMs: Math.round((performance.now() - started) * 100) / 100,
        status: res.statusCode,
        code: failure === undefined ? "ok" : errorCodeOf(failure),
        reason: failure instanceof DomainError ? failure.reason : undefined,
      });
      if (res.statusCode >= 500 && classifyError(failure).kind === "unexpected") {
        deps.logger.error({ ...line(), err: failure }, "call");
      } else if (failure !== undefined) {
        deps.logger.warn(line(), "call");
      } else if (deps.callLog) {
        deps.callLog.ok(method, line);
      } else {
        deps.logger.info(line(), "call");
      }
    };
}

/** RFC 7662 section 2.2: an active token's claims, or exactly `{"active": false}`. */
export function introspectionJson(i: Introspection): Record<string, unknown> {
  if (!i.active) return { active: false };
  const token = {
    active: true,
    token_type: i.tokenType,
    exp: i.exp,
    iat: i.iat,
    iss: i.iss,
    aud: i.aud,
    jti: i.jti,
    workspace_id: i.workspaceId,
    // RFC 9068's claims of a token issued to a client: the client and its scopes.
    ...(i.clientId === null ? {} : { client_id: i.clientId, scope: i.scopes.join(" ") }),
  };
  // A client's own token has no user.
  if (i.subject === "client") return token;
  return { ...token, sub: i.sub, sid: i.sid, role: i.role, amr: i.amr, acr: i.acr };
}

function errorCodeOf(error: unknown): string {
  return oauthErrorFor(error).error;
}

/** The RFC 6749 answer for any failure: its own errors as they are, the rest classified. */
function oauthErrorFor(error: unknown): OAuthError {
  if (error instanceof OAuthError) return error;
  if (error instanceof OAuthProtocolError) {
    return new OAuthError(
      error.status,
      error.error,
      error.description,
      error.error === "invalid_client" ? { "www-authenticate": 'Basic realm="keygate"' } : {},
    );
  }
  const classified = classifyError(error);
  switch (classified.kind) {
    case "domain":
      return oauthErrorOf(classified.error);
    case "unavailable":
      // Introspection fails closed: never active when the answer could not be checked.
      return new OAuthError(503, "temporarily_unavailable", "service unavailable, retry later", {
        "retry-after": "1",
      });
    default:
      return new OAuthError(500, "server_error", "internal error");
  }
}

function oauthErrorOf(error: DomainError): OAuthError {
  switch (error.kind) {
    case "unauthenticated":
      return invalidClient("client authentication failed");
    case "permission_denied":
      return new OAuthError(403, "unauthorized_client", "this client may not introspect tokens");
    case "invalid_argument":
      return new OAuthError(
        400,
        "invalid_request",
        error instanceof InvalidArgumentError ? error.message : "invalid request",
      );
    case "resource_exhausted":
      return new OAuthError(429, "rate_limited", "too many requests, retry later", {
        "retry-after": String(
          Math.max(
            1,
            Math.ceil((error instanceof RateLimitedError ? error.retryAfterMs : 0) / 1000),
          ),
        ),
      });
    case "unavailable":
      return new OAuthError(503, "temporarily_unavailable", "service unavailable, retry later", {
        "retry-after": "1",
      });
    default:
      return new OAuthError(400, "invalid_request", error.message);
  }
}

export function writeError(res: Res, error: unknown): void {
  const e = oauthErrorFor(error);
  json(
    res,
    e.status,
    { error: e.error, error_description: e.description },
    { "cache-control": "no-store", pragma: "no-cache", ...e.headers },
  );
}
