import type { Readiness } from "../readiness.js";
import type { NodeServerRequest, NodeServerResponse } from "./types.js";
import type { WebApp } from "./web-app.js";

type Req = NodeServerRequest;
type Res = NodeServerResponse;

export interface JwksSource {
  /** The public JSON Web Key Set: {"keys": [...]}. */
  jwks(): Promise<{ keys: readonly object[] }>;
}

/** Writes a JSON answer on an HTTP/1.1 or HTTP/2 compatibility response. */
export function json(
  res: Res,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
) {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.setHeader("content-length", Buffer.byteLength(text));
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.end(text);
}

/**
 * Plain HTTP endpoints beside the RPCs: probes, the JWKS, the given routes (exact paths, each
 * checking its own method) and, when enabled, the web app at /ui/ (with / redirecting there).
 * Anything else is 404, /metrics included: metrics have a listener of their own.
 */
export function httpEndpoints(deps: {
  readiness: Readiness;
  jwks: JwksSource;
  webApp?: WebApp | undefined;
  routes?: ReadonlyMap<string, (req: Req, res: Res) => Promise<void>>;
  /** Routes by pattern (the OpenID Providers' paths), asked after the exact ones. */
  resolve?: ((path: string) => ((req: Req, res: Res) => Promise<void>) | undefined) | undefined;
}) {
  return async (req: Req, res: Res): Promise<void> => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const route = deps.routes?.get(path) ?? deps.resolve?.(path);
    if (route) {
      await route(req, res);
      return;
    }
    if (deps.webApp?.serve(req, res)) return;
    const readOnly = req.method === "GET" || req.method === "HEAD";
    // Public keys, for browser apps of any origin too (an SPA checks its ID tokens with them).
    if (path === "/.well-known/jwks.json") res.setHeader("access-control-allow-origin", "*");
    if (path === "/.well-known/jwks.json" && req.method === "OPTIONS") {
      res.statusCode = 204;
      res.setHeader("access-control-allow-methods", "GET");
      res.setHeader("content-length", 0);
      res.end();
      return;
    }
    if (
      !readOnly &&
      (path === "/healthz" || path === "/readyz" || path === "/.well-known/jwks.json")
    ) {
      json(res, 405, { error: "method not allowed" }, { allow: "GET, HEAD" });
      return;
    }
    switch (path) {
      case "/healthz":
        json(res, 200, { status: "ok" }, { "cache-control": "no-store" });
        return;
      case "/readyz": {
        const state = await deps.readiness.check();
        json(
          res,
          state.ready ? 200 : 503,
          state.ready ? { status: "ready" } : { status: "not_ready", reason: state.reason },
          {
            "cache-control": "no-store",
          },
        );
        return;
      }
      case "/.well-known/jwks.json":
        try {
          json(res, 200, await deps.jwks.jwks(), { "cache-control": "public, max-age=60" });
        } catch {
          json(res, 503, { error: "unavailable" }, { "cache-control": "no-store" });
        }
        return;
      default:
        json(res, 404, { error: "not found" });
    }
  };
}
