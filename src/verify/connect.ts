import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import type { VerifiedCaller, VerifiedClient, VerifyErrorReason } from "./options.js";
import { VerifyError } from "./options.js";
import type { Verifier } from "./verifier.js";

/** The verified caller of a call, set by keygateInterceptor (undefined on public methods). */
export const keygateCallerKey = createContextKey<VerifiedCaller | undefined>(undefined, {
  description: "the Keygate caller",
});

/** The OAuth client calling with its own token (with `clients: true`), else undefined. */
export const keygateClientKey = createContextKey<VerifiedClient | undefined>(undefined, {
  description: "the OAuth client calling",
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
 * every method when the verifier has `requireMfa`). `clients: true` (for a verifier with a
 * resource) also lets OAuth clients through with their own tokens, putting them in
 * `keygateClientKey` instead.
 */
export function keygateInterceptor(
  verifier: Verifier,
  options: {
    publicMethods?: ReadonlySet<string>;
    mfaMethods?: ReadonlySet<string>;
    clients?: boolean;
  } = {},
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
      const caller = options.clients
        ? await verifier.verifyUserOrClient(token, { workspaceId, requireMfa })
        : await verifier.verify(token, { workspaceId, requireMfa });
      if (caller.kind === "client") req.contextValues.set(keygateClientKey, caller);
      else req.contextValues.set(keygateCallerKey, caller);
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
