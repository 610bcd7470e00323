import { createContextKey } from "@connectrpc/connect";

/** Per-call values set by the transport and interceptors, read by handlers. */

export const requestIdKey = createContextKey<string>("", {
  description: "x-request-id of the call",
});

/** The TCP peer of the connection (not X-Forwarded-For). */
export const peerAddressKey = createContextKey<string>("", { description: "peer address" });
