import { createContextKey } from "@connectrpc/connect";
import type { Caller } from "./domain/admin-auth.js";
import type { Principal, RequestMeta } from "./domain/deps.js";

/** Per-call values set by the transport and interceptors, read by handlers. */

export const requestIdKey = createContextKey<string>("", {
  description: "x-request-id of the call",
});

/** The TCP peer of the connection (not X-Forwarded-For). */
export const peerAddressKey = createContextKey<string>("", { description: "peer address" });

/** Request id, peer, user agent and x-workspace-id of the call. */
export const requestMetaKey = createContextKey<RequestMeta>(
  { requestId: "", ipAddress: null, userAgent: null, workspaceHeader: null },
  { description: "request metadata" },
);

/** The signed-in caller, set by the authn interceptor. */
export const principalKey = createContextKey<Principal | undefined>(undefined, {
  description: "signed-in caller",
});

/** The admin key or signed-in owner/admin behind an AdminService or introspection call. */
export const callerKey = createContextKey<Caller | undefined>(undefined, {
  description: "admin caller",
});

/** "fast" when the lean unary lane (src/http/fast-lane.ts) serves the call; in its log line. */
export const servingLaneKey = createContextKey<"fast" | undefined>(undefined, {
  description: "serving lane",
});
