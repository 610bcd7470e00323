/**
 * keygate/client: typed clients for Node (internal services, CLIs, tests). Speaks gRPC,
 * Connect or gRPC-Web through @connectrpc/connect-node.
 */
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  type Http2SessionManager,
} from "@connectrpc/connect-node";
import { buildKeygateClient, type KeygateClient, type KeygateClientCommonOptions } from "./core.js";

export * from "./api.js";

export interface KeygateClientOptions extends KeygateClientCommonOptions {
  readonly transport: "grpc" | "connect" | "grpc-web";
  /** HTTP version for Connect and gRPC-Web (gRPC is always HTTP/2). Default "2". */
  readonly httpVersion?: "1.1" | "2";
  /** Node's http/https/http2 options, e.g. a `ca` for a private certificate authority. */
  readonly nodeOptions?: Parameters<typeof createGrpcTransport>[0]["nodeOptions"];
  /** Share HTTP/2 connections with other transports. */
  readonly sessionManager?: Http2SessionManager;
}

/**
 * Typed clients for AuthService, OtpService, FactorService, AdminService and
 * TokenIntrospectionService.
 */
export function createKeygateClient(options: KeygateClientOptions): KeygateClient {
  return buildKeygateClient(options, (interceptors) => {
    const common = {
      baseUrl: options.baseUrl,
      interceptors,
      ...(options.nodeOptions ? { nodeOptions: options.nodeOptions } : {}),
      ...(options.sessionManager ? { sessionManager: options.sessionManager } : {}),
    };
    const httpVersion = options.httpVersion ?? "2";
    switch (options.transport) {
      case "grpc":
        return createGrpcTransport(common);
      case "connect":
        return createConnectTransport({ ...common, httpVersion } as Parameters<
          typeof createConnectTransport
        >[0]);
      case "grpc-web":
        return createGrpcWebTransport({ ...common, httpVersion } as Parameters<
          typeof createGrpcWebTransport
        >[0]);
      default:
        throw new TypeError(`unknown transport ${String(options.transport)}`);
    }
  });
}
