import { Code, ConnectError, createConnectRouter, type MethodImplSpec } from "@connectrpc/connect";
import { createAsyncIterable, validateUniversalHandlerOptions } from "@connectrpc/connect/protocol";
import {
  type ConnectNodeAdapterOptions,
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { jsonViolations, jsonViolationsKey } from "../interceptors/json-fields.js";
import type { Logger } from "../log.js";
import { createFastLane } from "./fast-lane.js";
import { refuse } from "./refusal.js";
import type { NodeServerRequest, NodeServerResponse } from "./types.js";

/**
 * connect-es's Node adapter, plus one step for Connect JSON unary calls: the body is checked
 * against the request message before connect-es decodes it, and what does not fit (a
 * misspelt field, an enum value the schema does not have, a string for a number) is handed
 * to the interceptors as field violations, so the caller gets INVALID_ARGUMENT naming the
 * field through the one error mapping. connect-es alone fails such a body before any
 * interceptor runs, with a bare message (or, by default, drops unknown fields silently).
 * Bodies that are compressed, chunked, larger than the limit or not JSON at all are left to
 * connect-es, which refuses them in its own words.
 *
 * With `fastLane`, those methods' plain unary calls are served by the lean lane
 * (createFastLane) with the same interceptors and options; what it does not take comes here.
 */
export function rpcAdapter(
  options: ConnectNodeAdapterOptions & { logger: Logger; fastLane?: readonly MethodImplSpec[] },
) {
  const routerOptions = {
    acceptCompression: [compressionGzip, compressionBrotli],
    ...options,
  };
  const router = createConnectRouter(routerOptions);
  options.routes(router);
  const fast =
    options.fastLane && options.contextValues
      ? createFastLane({
          methods: options.fastLane,
          router: validateUniversalHandlerOptions(routerOptions),
          contextValues: options.contextValues,
          logger: options.logger,
        })
      : undefined;
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const readMaxBytes = options.readMaxBytes ?? 0xffffffff;
  const encoder = new TextEncoder();

  return (req: NodeServerRequest, res: NodeServerResponse) => {
    const path = req.url?.split("?", 2)[0] ?? "";
    if (fast?.(req, res, path, (read) => general(req, res, path, read))) return;
    general(req, res, path);
  };

  /** connect-es's path; `read` is what the fast lane already read of the body. */
  function general(
    req: NodeServerRequest,
    res: NodeServerResponse,
    path: string,
    read?: readonly Uint8Array[],
  ) {
    const handler = paths.get(path);
    if (!handler) {
      if (options.fallback) options.fallback(req, res);
      else {
        res.writeHead(404);
        res.end();
      }
      return;
    }
    const contextValues = options.contextValues?.(req);
    let uReq: ReturnType<typeof universalRequestFromNodeRequest>;
    try {
      uReq = universalRequestFromNodeRequest(req, res, undefined, contextValues);
    } catch {
      // No authority a URL can be built with (an HTTP/1.1 Host of "a b"): connect-node
      // throws, and the request is the client's error.
      refuse(req, res, Code.InvalidArgument, "the request's host is missing or not valid");
      return;
    }
    const sent = read ? replayed(req, read) : undefined;
    if (sent) uReq.body = sent;
    const length = Number(req.headers["content-length"]);
    const prechecked =
      handler.method.methodKind === "unary" &&
      req.method === "POST" &&
      /^application\/json(;|$)/i.test(req.headers["content-type"] ?? "") &&
      req.headers["content-encoding"] === undefined &&
      Number.isSafeInteger(length) &&
      length <= readMaxBytes;
    const run = async () => {
      if (prechecked && contextValues) {
        const chunks: Uint8Array[] = [];
        try {
          for await (const chunk of sent ?? req) chunks.push(chunk as Uint8Array);
        } catch {
          // The client went away mid-body: there is no one to answer.
          res.destroy();
          return;
        }
        const bytes = Buffer.concat(chunks);
        let body: Uint8Array = bytes;
        let json: unknown;
        let parsed = true;
        try {
          json = JSON.parse(bytes.toString("utf8"));
        } catch {
          parsed = false; // connect-es answers undecodable JSON itself
        }
        if (parsed) {
          const violations = jsonViolations(handler.method.input, json);
          if (violations.length > 0) {
            contextValues.set(jsonViolationsKey, violations);
            body = encoder.encode("{}");
          }
        }
        uReq.body = createAsyncIterable([body]);
        uReq.header.set("content-length", String(body.byteLength));
      }
      return universalResponseToNodeResponse(await handler(uReq), res);
    };
    run().catch((reason: unknown) => {
      if (ConnectError.from(reason).code === Code.Aborted) return;
      options.logger.error(
        { err: reason, method: `${handler.service.typeName}/${handler.method.name}` },
        "rpc handler failed",
      );
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  }
}

/** The body as it was sent: the chunks already read, then the rest of the stream. */
async function* replayed(req: NodeServerRequest, read: readonly Uint8Array[]) {
  yield* read;
  if (req.readableEnded) return;
  for await (const chunk of req) yield chunk as Uint8Array;
}
