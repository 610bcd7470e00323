import type { Interceptor } from "@connectrpc/connect";
import { principalKey, requestMetaKey } from "../context-keys.js";
import type { Principal } from "../domain/deps.js";
import { PermissionDeniedError, UnauthenticatedError } from "../errors.js";
import type { accessOf } from "../handlers/access.js";

/**
 * Puts the signed-in caller in the call's context, by the access table: `signed_in` methods
 * refuse calls without a valid access token; `signed_in_optional` ones check a token when one
 * is sent and run without one otherwise; `public` and `admin` ones are not this interceptor's
 * (adminAuthnInterceptor authenticates the admin ones). A method the table does not list is
 * refused.
 */
export function authnInterceptor(options: {
  authenticate(token: string, workspaceHeader: string | null): Promise<Principal>;
  access: typeof accessOf;
}): Interceptor {
  return (next) => async (req) => {
    const access = options.access(req.service, req.method.name);
    if (access === undefined)
      throw new PermissionDeniedError("PERMISSION_DENIED", "this method is open to no caller");
    const required = access === "signed_in";
    if (!required && access !== "signed_in_optional") return next(req);
    const header = req.header.get("authorization");
    const token = header?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
    if (!token) {
      if (required || header) {
        throw new UnauthenticatedError(
          "UNAUTHENTICATED",
          "send `authorization: Bearer <access token>`",
        );
      }
      return next(req);
    }
    const principal = await options.authenticate(
      token,
      req.contextValues.get(requestMetaKey).workspaceHeader,
    );
    req.contextValues.set(principalKey, principal);
    return next(req);
  };
}
