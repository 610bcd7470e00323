import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import type { VerifiedCaller, VerifyErrorReason } from "./options.js";
import { VerifyError } from "./options.js";
import type { Verifier } from "./verifier.js";

/** The verified caller of a call, set by keygateInterceptor (undefined on public methods). */
export const keygateCallerKey = createContextKey<VerifiedCaller | undefined>(undefined, {
  description: "the Keygate caller",
});

const codes: Record<VerifyErrorReason, Code> = {
  invalid: Code.Unauthenticated,
  expired: Code.Unauthenticated,
  revoked: Code.Unauthenticated,
  workspace_mismatch: Code.PermissionDenied,
  membership_inactive: Code.PermissionDenied,
  mfa_required: Code.PermissionDenied,
  stale: Code.Unavailable,
};

/**
 * A connect-node interceptor that lets only calls with a valid Keygate access token through:
 * `authorization: Bearer <token>`, checked against `x-workspace-id` when sent; the caller is
 * put in the `keygateCallerKey` context value. Refusals are UNAUTHENTICATED (invalid,
 * expired, revoked), PERMISSION_DENIED (workspace_mismatch, membership_inactive,
 * mfa_required) or UNAVAILABLE (stale), each with the reason in the message and the
 * `keygate-reason` trailer. `mfaMethods` need a token signed in with two factors (as does
 * every method when the verifier has `requireMfa`).
 */
export function keygateInterceptor(
  verifier: Verifier,
  options: { publicMethods?: ReadonlySet<string>; mfaMethods?: ReadonlySet<string> } = {},
): Interceptor {
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    if (options.publicMethods?.has(method)) return next(req);
    const token = req.header.get("authorization")?.match(/^Bearer[ \t]+(\S+)[ \t]*$/i)?.[1];
    if (!token) {
      throw new ConnectError("send `authorization: Bearer <access token>`", Code.Unauthenticated);
    }
    const workspaceId = req.header.get("x-workspace-id") ?? undefined;
    try {
      const requireMfa = options.mfaMethods?.has(method) ? true : undefined;
      req.contextValues.set(
        keygateCallerKey,
        await verifier.verify(token, { workspaceId, requireMfa }),
      );
    } catch (error) {
      if (!(error instanceof VerifyError)) throw error;
      throw new ConnectError(
        `${error.reason}: ${error.message}`,
        codes[error.reason],
        new Headers({ "keygate-reason": error.reason }),
      );
    }
    return next(req);
  };
}
