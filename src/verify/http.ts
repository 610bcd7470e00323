import type { IncomingMessage, ServerResponse } from "node:http";
import type { VerifiedCaller, Verifier, VerifyErrorReason } from "./verifier.js";
import { VerifyError } from "./verifier.js";

const statuses: Record<VerifyErrorReason, number> = {
  invalid: 401,
  expired: 401,
  revoked: 401,
  workspace_mismatch: 403,
  membership_inactive: 403,
  mfa_required: 401,
  stale: 503,
};

/** The request type the middleware decorates. */
export type KeygateRequest = IncomingMessage & { keygate?: VerifiedCaller };

/**
 * Middleware for node:http, Express and Fastify-style handlers `(req, res, next)`: a valid
 * bearer access token sets `req.keygate` and calls `next()`; otherwise it answers 401 (with
 * `WWW-Authenticate: Bearer realm="keygate", error="invalid_token"`, or for a single-factor
 * token where two are required RFC 9470's `error="insufficient_user_authentication"` with
 * `acr_values="2 phr"`), 403 (`error="insufficient_scope"`) or 503 (stale), with a JSON body
 * naming the reason. `requireMfa` asks every request for two factors.
 */
export function keygateMiddleware(verifier: Verifier, options: { requireMfa?: boolean } = {}) {
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
          `Bearer realm="keygate", error="${error}", error_description="${description}"${stepUp}`,
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
    verifier.verify(token, { workspaceId, requireMfa: options.requireMfa }).then(
      (caller) => {
        req.keygate = caller;
        next();
      },
      (error: unknown) => {
        if (error instanceof VerifyError) refuse(error.reason, error.message);
        else next(error);
      },
    );
  };
}
