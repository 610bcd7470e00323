import type { IncomingMessage, ServerResponse } from "node:http";
import cors from "cors";

/** Request headers browsers may send to Keygate (Connect, gRPC-Web and Keygate's own). */
export const corsAllowedHeaders = [
  "Content-Type",
  "Connect-Protocol-Version",
  "Connect-Timeout-Ms",
  "Connect-Accept-Encoding",
  "Connect-Content-Encoding",
  "Grpc-Timeout",
  "Grpc-Accept-Encoding",
  "X-Grpc-Web",
  "X-User-Agent",
  "Authorization",
  "X-Workspace-Id",
  "X-Request-Id",
];

/** Response headers browsers may read (gRPC-Web trailers-in-headers, errors, request id). */
export const corsExposedHeaders = [
  "Grpc-Status",
  "Grpc-Message",
  "Grpc-Status-Details-Bin",
  "Grpc-Encoding",
  "Connect-Content-Encoding",
  "X-Request-Id",
];

type Middleware = (
  req: IncomingMessage,
  res: ServerResponse,
  next: (err?: unknown) => void,
) => void;

/**
 * CORS for the configured origins only (exact match). Preflights are answered here; other
 * requests get the headers and continue.
 */
export function corsMiddleware(origins: readonly string[]): Middleware | undefined {
  if (origins.length === 0) return undefined;
  const allowed = new Set(origins);
  return cors({
    origin: (origin, callback) =>
      callback(null, origin !== undefined && (allowed.has("*") || allowed.has(origin))),
    methods: ["GET", "POST"],
    allowedHeaders: corsAllowedHeaders,
    exposedHeaders: corsExposedHeaders,
    maxAge: 7200,
    credentials: false,
  }) as Middleware;
}
