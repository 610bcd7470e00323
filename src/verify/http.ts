import type { IncomingMessage, ServerResponse } from "node:http";
import type { VerifiedCaller, VerifiedClient, VerifyErrorReason } from "./options.js";
import { VerifyError } from "./options.js";
import type { Verifier } from "./verifier.js";

const statuses: Record<VerifyErrorReason, number> = {
  invalid: 401,
  expired: 401,
  revoked: 401,
  workspace_mismatch: 403,
  membership_inactive: 403,
  mfa_required: 401,
  stale: 503,
};

/**
 * The request type the middleware decorates: `keygate` for a user's token, `keygateClient`
 * for a client's own (only with `clients: true`).
 */
export type KeygateRequest = IncomingMessage & {
  keygate?: VerifiedCaller;
  keygateClient?: VerifiedClient;
};

/**
 * Middleware for node:http, Express and Fastify-style handlers `(req, res, next)`: a valid
 * bearer access token sets `req.keygate` and calls `next()`; otherwise it answers 401 (with
 * `WWW-Authenticate: Bearer realm="keygate", error="invalid_token"`, or for a single-factor
 * token where two are required RFC 9470's `error="insufficient_user_authentication"` with
 * `acr_values="2 phr"`), 403 (`error="insufficient_scope"`) or 503 (stale), with a JSON body
 * naming the reason. `requireMfa` asks every request for two factors. `clients: true` (for a
 * verifier with a resource) also lets OAuth clients through with their own tokens, setting
 * `req.keygateClient` instead of `req.keygate`.
 */
export function keygateMiddleware(
  verifier: Verifier,
  options: { requireMfa?: boolean; clients?: boolean } = {},
) {
  // RFC 9728 section 5.1: a resource's challenge says where its metadata is, which names the
  // provider a client (an MCP client, say) gets its token from.
  const protectedResource = verifier.protectedResource;
  const metadata =
    protectedResource === undefined
      ? ""
      : `, resource_metadata="${protectedResourceMetadataUrl(protectedResource.resource)}"`;
  return (req: KeygateRequest, res: ServerResponse, next: (error?: unknown) => void): void => {
    const header = req.headers.authorization;
    const token = header?.match(/^Bearer[ \t]+(\S+)[ \t]*$/i)?.[1];
    const workspace = req.headers["x-workspace-id"];
    const workspaceId = typeof workspace === "string" ? workspace : undefined;
    const refuse = (reason: VerifyErrorReason, description: string) => {
      const status = statuses[reason];
      const error =
        reason === "mfa_required"
          ? "insufficient_user_authentication"
          : status === 403
            ? "insufficient_scope"
            : "invalid_token";
      const stepUp = reason === "mfa_required" ? `, acr_values="2 phr"` : "";
      res.statusCode = status;
      if (status !== 503) {
        res.setHeader(
          "www-authenticate",
          `Bearer realm="keygate", error="${error}", error_description="${description}"${stepUp}${metadata}`,
        );
      }
      res.setHeader("content-type", "application/json");
      res.setHeader("cache-control", "no-store");
      res.end(JSON.stringify({ error: reason, error_description: description }));
    };
    if (!token) {
      refuse("invalid", "a bearer access token is required");
      return;
    }
    const perCall = { workspaceId, requireMfa: options.requireMfa };
    (options.clients
      ? verifier.verifyUserOrClient(token, perCall)
      : verifier.verify(token, perCall)
    ).then(
      (caller) => {
        if (caller.kind === "client") req.keygateClient = caller;
        else req.keygate = caller;
        next();
      },
      (error: unknown) => {
        if (error instanceof VerifyError) refuse(error.reason, error.message);
        else next(error);
      },
    );
  };
}

/**
 * Where a resource's RFC 9728 metadata is: `/.well-known/oauth-protected-resource` inserted
 * between the resource's host and its path (section 3.1).
 */
export function protectedResourceMetadataUrl(resource: string): string {
  const url = new URL(resource);
  const path = url.pathname === "/" ? "" : url.pathname;
  return `${url.origin}/.well-known/oauth-protected-resource${path}${url.search}`;
}

/**
 * RFC 9728 protected resource metadata for a verifier with a `resource`: the resource, the
 * workspace's provider as its authorization server, bearer tokens in the header. Serve it at
 * protectedResourceMetadataUrl(resource), e.g. with protectedResourceMetadataHandler.
 */
export function protectedResourceMetadata(
  verifier: Verifier,
  extra: { scopesSupported?: readonly string[]; resourceName?: string } = {},
): Record<string, unknown> {
  const protectedResource = verifier.protectedResource;
  if (protectedResource === undefined) {
    throw new TypeError("the verifier has no resource: give it one to describe it");
  }
  return {
    resource: protectedResource.resource,
    authorization_servers: [protectedResource.authorizationServer],
    bearer_methods_supported: ["header"],
    ...(extra.scopesSupported ? { scopes_supported: [...extra.scopesSupported] } : {}),
    ...(extra.resourceName ? { resource_name: extra.resourceName } : {}),
  };
}

/**
 * A node:http handler answering GET (and HEAD) of the metadata document, readable from any
 * origin since browser-based clients read it too; calls `next` for every other path.
 */
export function protectedResourceMetadataHandler(
  verifier: Verifier,
  extra: { scopesSupported?: readonly string[]; resourceName?: string } = {},
) {
  const document = JSON.stringify(protectedResourceMetadata(verifier, extra));
  const path = new URL(protectedResourceMetadataUrl(verifier.protectedResource?.resource ?? ""))
    .pathname;
  return (req: IncomingMessage, res: ServerResponse, next: () => void): void => {
    const requested = (req.url ?? "/").split("?", 1)[0];
    if (requested !== path) {
      next();
      return;
    }
    res.setHeader("access-control-allow-origin", "*");
    if (req.method === "OPTIONS") {
      res.statusCode = 204;
      res.setHeader("access-control-allow-methods", "GET");
      res.end();
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.statusCode = 405;
      res.setHeader("allow", "GET, HEAD");
      res.end();
      return;
    }
    res.statusCode = 200;
    res.setHeader("content-type", "application/json");
    res.setHeader("cache-control", "public, max-age=300");
    res.end(req.method === "HEAD" ? undefined : document);
  };
}
