import type { ServerResponse } from "node:http";
import type { ContextValues, MethodImplSpec } from "@connectrpc/connect";
import { Code, ConnectError, createHandlerContext } from "@connectrpc/connect";
import {
  createMethodSerializationLookup,
  invokeUnaryImplementation,
  type UniversalHandlerOptions,
} from "@connectrpc/connect/protocol";
import { servingLaneKey } from "../context-keys.js";
import { jsonViolations } from "../interceptors/json-fields.js";
import type { Logger } from "../log.js";
import {
  answerOf,
  asConnectError,
  encoded,
  framingOf,
  nodeHeaders,
  responseCompression,
  timeoutOf,
  unenvelope,
} from "./fast-lane-wire.js";
import type { NodeServerRequest, NodeServerResponse } from "./types.js";

/**
 * Gives the request to the general path with the part of its body the lane read (all of it,
 * or the first chunks when the stream has not ended).
 */
export type HandOver = (read: readonly Uint8Array[]) => void;

type UnarySpec = MethodImplSpec & { kind: "unary" };

/**
 * A lean path for the hot unary RPCs (Introspect, IntrospectBatch, GetJwks, Envoy's Check),
 * in front of connect-es's general one on the same port. It reads the body with Node's stream
 * API and frames the answer itself, but runs the call through connect-es's own
 * invokeUnaryImplementation with the router's interceptors (tracing, the error mapping and
 * call log, JSON fields, text, authentication), its serializers and its helpers for status
 * trailers and error bodies, so each call is authenticated, answered, logged and counted as
 * the general path does it. It takes only what it understands fully: a POST with one of the
 * plain content types, identity encoding, a timeout connect-es accepts, a body within the
 * limit that decodes (one uncompressed envelope for gRPC and gRPC-Web; for Connect JSON, one
 * whose fields all fit the request message). Anything else goes to the general path,
 * untouched, with the bytes already read: that path then answers in its own words.
 */
export function createFastLane(options: {
  methods: readonly MethodImplSpec[];
  router: UniversalHandlerOptions;
  contextValues: (req: NodeServerRequest) => ContextValues;
  logger: Logger;
}) {
  const opt = options.router;
  const lanes = new Map(
    options.methods
      .filter((spec): spec is UnarySpec => spec.kind === "unary")
      .map((spec) => [
        `/${spec.method.parent.typeName}/${spec.method.name}`,
        {
          spec,
          serialization: createMethodSerializationLookup(
            spec.method,
            opt.binaryOptions,
            opt.jsonOptions,
            opt,
          ),
        },
      ]),
  );

  return function serve(
    req: NodeServerRequest,
    res: NodeServerResponse,
    path: string,
    handOver: HandOver,
  ): boolean {
    const lane = lanes.get(path);
    if (!lane || req.method !== "POST") return false;
    const headers = req.headers;
    const header = (name: string) => {
      const value = headers[name];
      return typeof value === "string" ? value : undefined;
    };
    const http2 = "stream" in req;
    // connect-node cannot build a request's URL without one: its own answer to that stands.
    const authority = http2 ? (req as { authority?: string }).authority : headers.host;
    if (!authority) return false;
    const framing = framingOf(header("content-type"), http2);
    if (!framing || encoded(framing.wire, header)) return false;
    const timeoutMs = timeoutOf(framing.wire, header, opt.maxTimeoutMs);
    if (timeoutMs === "refused") return false;
    const length = header("content-length");
    const declared = length === undefined ? undefined : Number(length);
    const limit = opt.readMaxBytes + (framing.wire === "connect" ? 0 : 5);
    // The general path checks Connect JSON's fields only when the length is declared.
    if (declared === undefined ? !framing.binary : !(declared <= limit)) return false;

    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.byteLength;
      if (size > limit) {
        req.off("data", onData);
        req.off("end", onEnd);
        req.off("error", onError);
        req.pause();
        handOver(chunks);
      }
    };
    const onEnd = () => {
      req.off("data", onData);
      req.off("error", onError);
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
      const input = decode(body);
      if (input === undefined) handOver(chunks);
      else
        call(input).catch((error: unknown) => {
          options.logger.error(
            { err: error, method: `${lane.spec.method.parent.typeName}/${lane.spec.method.name}` },
            "rpc handler failed",
          );
          res.destroy();
        });
    };
    const onError = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      res.destroy();
    };
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("error", onError);

    const decode = (body: Uint8Array) => {
      const data = framing.wire === "connect" ? body : unenvelope(body);
      if (data === undefined) return undefined;
      try {
        if (!framing.binary) {
          const violations = jsonViolations(lane.spec.method.input, JSON.parse(String(body)));
          if (violations.length > 0) return undefined;
        }
        return lane.serialization.getI(framing.binary).parse(data);
      } catch {
        return undefined;
      }
    };

    const call = async (input: unknown) => {
      const requestSignal = new AbortController();
      // A client that leaves before the answer is written aborts the call, as in connect-node.
      res.once("close", () => {
        if (!res.writableFinished) requestSignal.abort();
      });
      const contextValues = options.contextValues(req).set(servingLaneKey, "fast");
      const context = createHandlerContext({
        ...lane.spec,
        service: lane.spec.method.parent,
        requestMethod: "POST",
        protocolName: framing.protocolName,
        timeoutMs,
        shutdownSignal: opt.shutdownSignal,
        requestSignal: requestSignal.signal,
        requestHeader: requestHeaders(headers),
        url: new URL(
          req.url ?? "",
          `${"encrypted" in req.socket && req.socket.encrypted ? "https" : "http"}://${authority}`,
        ).toString(),
        responseHeader: framing.responseHeader,
        responseTrailer: framing.responseTrailer,
        contextValues,
      });
      const compression = responseCompression(framing.wire, header, opt.acceptCompression);
      let output: Uint8Array | undefined;
      let error: ReturnType<typeof asConnectError> | undefined;
      try {
        const message = await invokeUnaryImplementation(
          lane.spec,
          context,
          input as never,
          opt.interceptors,
        );
        output = lane.serialization.getO(framing.binary).serialize(message);
      } catch (e) {
        error = asConnectError(e);
        context.abort(e);
      } finally {
        // Ends the deadline and the signal's links to the request and the shutdown. Given a
        // reason, abort() does not build a DOMException (and its stack) on every call.
        context.abort(callOver);
      }
      try {
        const answer = await answerOf(framing, {
          header: context.responseHeader,
          trailer: context.responseTrailer,
          output,
          error,
          compression,
          compressMinBytes: opt.compressMinBytes,
          jsonOptions: opt.jsonOptions,
        });
        // Both have these four; TypeScript cannot call the union's overloads.
        const out = res as ServerResponse;
        out.writeHead(answer.status, nodeHeaders(answer.header));
        for (const chunk of answer.chunks) out.write(chunk);
        if (answer.trailer) out.addTrailers(nodeHeaders(answer.trailer));
        out.end();
      } catch {
        // The client went away while the answer was written: there is no one to tell.
        res.destroy();
      }
    };
    return true;
  };
}

/** The reason a finished call's signal is aborted with. */
const callOver = new ConnectError("the call is over", Code.Canceled);

/**
 * The request's headers as connect-node's nodeHeaderToWebHeader gives them (repeated values
 * joined as Headers joins appended ones), as the record createHandlerContext copies into
 * Headers: one copy instead of two.
 */
function requestHeaders(headers: NodeServerRequest["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in headers) {
    const v = headers[k];
    if (k.startsWith(":") || v === undefined) continue;
    out[k] = typeof v === "string" ? v : Array.isArray(v) ? v.join(", ") : String(v);
  }
  return out;
}
