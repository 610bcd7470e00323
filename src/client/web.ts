/**
 * keygate/client/web: typed clients for browsers, over fetch (@connectrpc/connect-web).
 * Imports nothing that needs Node.
 */
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { buildKeygateClient, type KeygateClient, type KeygateClientCommonOptions } from "./core.js";
import { parseStoredTokens, type TokenStore } from "./tokens.js";

export * from "./api.js";

export interface KeygateWebClientOptions extends KeygateClientCommonOptions {
  /** Browsers cannot speak gRPC itself (no trailers in fetch): Connect or gRPC-Web. */
  readonly transport: "connect" | "grpc-web";
  /** Connect only: send the binary protobuf encoding instead of JSON. */
  readonly useBinaryFormat?: boolean;
  /** Another fetch (for example one that adds headers); the global one by default. */
  readonly fetch?: typeof globalThis.fetch;
}

/**
 * Typed clients for AuthService, OtpService, FactorService, AdminService and
 * TokenIntrospectionService.
 */
export function createKeygateClient(options: KeygateWebClientOptions): KeygateClient {
  return buildKeygateClient(options, (interceptors) => {
    const common = {
      baseUrl: options.baseUrl,
      interceptors,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    };
    switch (options.transport) {
      case "connect":
        return createConnectTransport({
          ...common,
          useBinaryFormat: options.useBinaryFormat ?? false,
        });
      case "grpc-web":
        return createGrpcWebTransport(common);
      default:
        throw new TypeError(
          `transport ${String(options.transport)} is not available in browsers: use "connect" or "grpc-web"`,
        );
    }
  });
}

/**
 * Keeps the session in the tab's sessionStorage: it survives reloads but not closing the tab,
 * and other tabs do not share it. Anything a script on the page can read, an injected script
 * can read too: serve the page with a strict Content-Security-Policy.
 */
export function sessionStorageTokenStore(
  key = "keygate.tokens",
  storage: Storage = globalThis.sessionStorage,
): TokenStore {
  return {
    get: () => parseStoredTokens(storage.getItem(key)),
    set: (tokens) => {
      if (tokens) storage.setItem(key, JSON.stringify(tokens));
      else storage.removeItem(key);
    },
  };
}
