import type { HandlerContext } from "@connectrpc/connect";
import { callerKey } from "../../context-keys.js";
import type { Caller } from "../../domain/admin-auth.js";
import { UnauthenticatedError } from "../../errors.js";

/** The authenticated admin caller of this call (set by the admin authn interceptor). */
export function callerOf(ctx: HandlerContext): Caller {
  const caller = ctx.values.get(callerKey);
  if (!caller)
    throw new UnauthenticatedError(
      "UNAUTHENTICATED",
      "send `authorization: Bearer <admin key or access token>`",
    );
  return caller;
}
