import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type ConnectRouterOptions,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { CallLog } from "./call-log.js";
import type { Config } from "./config.js";
import { peerAddressKey, requestIdKey, requestMetaKey } from "./context-keys.js";
import type { RequestMeta } from "./domain/deps.js";
import { clientIpResolver, isTrustedProxy } from "./http/client-ip.js";
import { corsMiddleware } from "./http/cors.js";
import { httpEndpoints, type JwksSource, json } from "./http/endpoints.js";
import { createListener } from "./http/listener.js";
import { type OAuthDeps, oauthEndpoints } from "./http/oauth.js";
import { openIdProviderRoutes, type ProviderHttpDeps } from "./http/openid-provider.js";
import { rpcAdapter } from "./http/rpc-adapter.js";
import type { NodeServerRequest, NodeServerResponse } from "./http/types.js";
import type { WebApp } from "./http/web-app.js";
import { errorInterceptor } from "./interceptors/errors.js";
import { jsonFieldsInterceptor } from "./interceptors/json-fields.js";
import { textInterceptor } from "./interceptors/text.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";
import type { Readiness } from "./readiness.js";
import { type Handlers, hotMethods, routes } from "./routes.js";

export interface ServerDeps {
  readonly config: Pick<
    Config,
    | "tls"
    | "corsOrigins"
    | "maxRequestBytes"
    | "maxTimeoutMs"
    | "trustedProxies"
    | "ipv6PrefixLength"
    | "streams"
    | "logSampleEvery"
    | "fastLane"
  >;
  /** RFC 7662 / 7009 / 8414 endpoints over the same Introspector as the RPCs. */
  readonly oauth?: OAuthDeps;
  /** The workspaces' OpenID Providers, when enabled. */
  readonly provider?: Omit<
    ProviderHttpDeps,
    "logger" | "callLog" | "maxRequestBytes" | "requestMeta"
  >;
  readonly logger: Logger;
  readonly readiness: Readiness;
  readonly jwks: JwksSource;
  readonly handlers: Handlers;
  readonly metrics?: Metrics;
  /** Outermost: sees every call's final code, after the error mapping. */
  readonly tracing?: { interceptor(): Interceptor };
  /** The web app at /ui/, when enabled. */
  readonly webApp?: WebApp | undefined;
  /** Interceptors that run after the error mapping (authentication, ...). */
  readonly interceptors?: readonly Interceptor[];
}

export interface Server {
  listen(port: number, host: string): Promise<AddressInfo>;
  /** Readiness turns 503 and new calls are refused; in-flight calls get until the deadline. */
  close(deadlineMs: number): Promise<void>;
}

/**
 * What every RPC passes through, whatever carries it: the interceptors, outermost first, and
 * the router's limits. buildServer adds the listener's own (request ids, shutdown, HTTP).
 */
export function rpcRouterOptions(
  deps: Pick<ServerDeps, "config" | "logger" | "metrics" | "tracing" | "interceptors">,
  callLog: CallLog,
) {
  return {
    interceptors: [
      ...(deps.tracing ? [deps.tracing.interceptor()] : []),
      errorInterceptor(deps.logger, deps.metrics, callLog),
      jsonFieldsInterceptor(),
      textInterceptor(),
      ...(deps.interceptors ?? []),
    ],
    readMaxBytes: deps.config.maxRequestBytes,
    // Connect JSON as protobuf defines it: a field name or enum value the schema does not have
    // is refused (INVALID_ARGUMENT, see rpcAdapter for the field details) rather than dropped,
    // so a misspelt setting never reads as "unchanged". connect-es alone would ignore both.
    jsonOptions: { ignoreUnknownFields: false },
    maxTimeoutMs: deps.config.maxTimeoutMs,
    // Answers under 2 KiB go out as they are (connect-es compresses from 1 KiB): tokens are
    // random and barely shrink, gzip cost a sign-in more CPU than its answer's bytes cost the
    // network, and an answer that carries a secret beside what its caller chose should not be
    // compressed at all (compression side channels). Lists, which do shrink, are larger.
    compressMinBytes: 2048,
  } satisfies ConnectRouterOptions;
}

const requestIdPattern = /^[\w.:-]{1,128}$/;
/**
 * The request id, kept on the request itself: a WeakMap keyed by requests made V8's scavenger
 * keep every request alive through the next young-generation collection (ephemeron keys are
 * not collected there), which grew the young generation to 64 MB and made each collection a
 * 10-20 ms pause.
 */
const requestIdOf = Symbol("keygate request id");
type Tagged = { [requestIdOf]?: string };

/**
 * An HTTP/1.1 request target in absolute form (`POST http://host/path`, as clients behind a
 * forward proxy send it), which a server must take (RFC 9112, section 3.2.2), becomes the
 * path every route matches on.
 */
function absolutePath(req: NodeServerRequest): void {
  const url = req.url ?? "";
  if (url.startsWith("/") || !/^https?:\/\//i.test(url) || !URL.canParse(url)) return;
  const parsed = new URL(url);
  req.url = `${parsed.pathname}${parsed.search}`;
}

/** Builds the server without listening, so tests and the CLI share it. */
export function buildServer(deps: ServerDeps): Server {
  const shutdown = new AbortController();
  let draining = false;
  const clientIp = clientIpResolver(deps.config.trustedProxies);
  const callLog = new CallLog(deps.logger, {
    sampleEvery: deps.config.logSampleEvery,
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
  });
  /** Who sent a request, for audit entries, limits and log lines (RPCs and plain HTTP). */
  const requestMeta = (req: NodeServerRequest): RequestMeta => {
    const requestId = (req as Tagged)[requestIdOf] ?? randomUUID();
    const peer = listener.peerAddress(req) ?? "";
    const userAgent = req.headers["user-agent"];
    const workspace = req.headers["x-workspace-id"];
    return {
      requestId,
      ipAddress: peer ? clientIp(peer, req.headers["x-forwarded-for"]) : null,
      userAgent: typeof userAgent === "string" ? userAgent.slice(0, 512) : null,
      workspaceHeader: typeof workspace === "string" && workspace !== "" ? workspace : null,
    };
  };
  const endpoints = httpEndpoints({
    ...deps,
    routes: deps.oauth
      ? oauthEndpoints({
          ...deps.oauth,
          logger: deps.logger,
          callLog,
          maxRequestBytes: deps.config.maxRequestBytes,
          requestMeta,
        })
      : undefined,
    resolve: deps.provider
      ? openIdProviderRoutes({
          ...deps.provider,
          logger: deps.logger,
          callLog,
          maxRequestBytes: deps.config.maxRequestBytes,
          requestMeta,
        }).resolve
      : undefined,
  });
  const rpc = rpcAdapter({
    logger: deps.logger,
    routes: routes(deps.handlers),
    ...rpcRouterOptions(deps, callLog),
    fastLane: deps.config.fastLane ? hotMethods(deps.handlers) : undefined,
    shutdownSignal: shutdown.signal,
    contextValues: (req) => {
      const meta = requestMeta(req);
      return createContextValues()
        .set(requestIdKey, meta.requestId)
        .set(peerAddressKey, listener.peerAddress(req) ?? "")
        .set(requestMetaKey, meta);
    },
    fallback: (req, res) => {
      endpoints(req, res).catch((error: unknown) => {
        deps.logger.error({ err: error }, "http endpoint failed");
        if (!res.headersSent) json(res, 500, { error: "internal error" });
        else res.end();
      });
    },
  });
  const cors = corsMiddleware(deps.config.corsOrigins);

  /** Every request, whatever it is: nothing thrown from here reaches Node (a crash). */
  const handle = (req: NodeServerRequest, res: NodeServerResponse) => {
    try {
      route(req, res);
    } catch (error) {
      deps.logger.error({ err: error, path: req.url }, "request failed");
      if (!res.headersSent) json(res, 500, { error: "internal error" });
      else res.destroy();
    }
  };
  const route = (req: NodeServerRequest, res: NodeServerResponse) => {
    absolutePath(req);
    const given = req.headers["x-request-id"];
    const requestId =
      typeof given === "string" && requestIdPattern.test(given) ? given : randomUUID();
    (req as Tagged)[requestIdOf] = requestId;
    res.setHeader("x-request-id", requestId);
    if (draining && !(req.url ?? "").startsWith("/healthz")) {
      // Connect and gRPC clients read UNAVAILABLE from these; plain HTTP sees 503.
      json(
        res,
        503,
        { code: "unavailable", message: "shutting down" },
        { "grpc-status": "14", "grpc-message": "shutting down" },
      );
      return;
    }
    if (cors) {
      cors(req as IncomingMessage, res as ServerResponse, (err) => {
        if (err) {
          json(res, 500, { error: "internal error" });
          return;
        }
        rpc(req, res);
      });
    } else {
      rpc(req, res);
    }
  };
  const listener = createListener(handle, {
    tls: deps.config.tls,
    limits: {
      maxConcurrentStreams: deps.config.streams.http2MaxConcurrentStreams,
      maxConnectionsPerIp: deps.config.streams.maxConnectionsPerIp,
      requestReceiveTimeoutMs: deps.config.streams.requestReceiveTimeoutMs,
      idleConnectionTimeoutMs: deps.config.streams.idleConnectionTimeoutMs,
      ipv6PrefixLength: deps.config.ipv6PrefixLength,
      exempt: isTrustedProxy(deps.config.trustedProxies),
    },
  });

  return {
    listen: (port, host) => listener.listen(port, host),
    async close(deadlineMs) {
      draining = true;
      deps.readiness.startDraining();
      // Calls still running at the deadline see their signal aborted, then lose their socket.
      const abortTimer = setTimeout(() => shutdown.abort(), Math.max(0, deadlineMs - 100));
      try {
        await listener.close(deadlineMs);
      } finally {
        clearTimeout(abortTimer);
        shutdown.abort();
        callLog.close();
      }
    },
  };
}
