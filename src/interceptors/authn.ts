import type { Interceptor } from "@connectrpc/connect";
import { principalKey, requestMetaKey } from "../context-keys.js";
import type { Principal } from "../domain/deps.js";
import { UnauthenticatedError } from "../errors.js";

/**
 * Puts the signed-in caller in the call's context. Methods listed as `required` refuse calls
 * without a valid access token; methods listed as `optional` check a token when one is sent
 * and run without one otherwise; other methods ignore the header (admin keys, public calls).
 */
export function authnInterceptor(options: {
  authenticate(token: string, workspaceHeader: string | null): Promise<Principal>;
  required: ReadonlySet<string>;
  optional: ReadonlySet<string>;
}): Interceptor {
  return (next) => async (req) => {
    const name = `${req.service.typeName}/${req.method.name}`;
    const required = options.required.has(name);
    if (!required && !options.optional.has(name)) return next(req);
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
