import type { HandlerContext } from "@connectrpc/connect";
import { principalKey, requestMetaKey } from "../context-keys.js";
import type { Principal, RequestMeta } from "../domain/deps.js";
import { UnauthenticatedError } from "../errors.js";

/** Who made a signed-in call; UNAUTHENTICATED when no access token came with it. */
export function principal(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (!p)
    throw new UnauthenticatedError(
      "UNAUTHENTICATED",
      "send `authorization: Bearer <access token>`",
    );
  return p;
}

/** The caller of a call that works with or without an access token. */
export const maybePrincipal = (ctx: HandlerContext): Principal | undefined =>
  ctx.values.get(principalKey);

/** The request's id, client address and user agent, for sessions and the audit log. */
export const meta = (ctx: HandlerContext): RequestMeta => ctx.values.get(requestMetaKey);
