import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";

/** The request handler shape connect-node serves: HTTP/1.1 or HTTP/2 compatibility API. */
export type NodeHandlerFn = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
export type NodeServerRequest = Parameters<NodeHandlerFn>[0];
export type NodeServerResponse = Parameters<NodeHandlerFn>[1];
