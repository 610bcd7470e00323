import type { Interceptor } from "@connectrpc/connect";
import { callerKey, requestMetaKey } from "../context-keys.js";
import type { Caller } from "../domain/admin-auth.js";
import { callerFromPrincipal } from "../domain/admin-auth.js";
import type { Principal } from "../domain/deps.js";
import { UnauthenticatedError } from "../errors.js";
import type { accessOf } from "../handlers/access.js";

/**
 * Authenticates the callers of the access table's `admin` methods (AdminService,
 * TokenIntrospectionService but GetJwks, Envoy's Check): `authorization: Bearer <admin key>`
 * or a user's access token (what a user may do is decided per RPC from their role). Puts the
 * Caller in the call's context.
 */
export function adminAuthnInterceptor(options: {
  access: typeof accessOf;
  authenticateAdminKey(secret: string): Promise<Caller>;
  authenticateUser(token: string, workspaceHeader: string | null): Promise<Principal>;
  /** Refuses a member's token that lacks what the workspace asks of admins (two factors). */
  checkUser?(principal: Principal): Promise<void>;
}): Interceptor {
  return (next) => async (req) => {
    if (options.access(req.service, req.method.name) !== "admin") return next(req);
    const token = req.header.get("authorization")?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
    if (!token)
      throw new UnauthenticatedError(
        "UNAUTHENTICATED",
        "send `authorization: Bearer <admin key or access token>`",
      );
    let caller: Caller;
    if (token.startsWith("kg_")) caller = await options.authenticateAdminKey(token);
    else {
      const principal = await options.authenticateUser(
        token,
        req.contextValues.get(requestMetaKey).workspaceHeader,
      );
      await options.checkUser?.(principal);
      caller = callerFromPrincipal(principal);
    }
    req.contextValues.set(callerKey, caller);
    return next(req);
  };
}
