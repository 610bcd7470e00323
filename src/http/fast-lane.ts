import type { ServerResponse } from "node:http";
import { create, type Message } from "@bufbuild/protobuf";
import type { ContextValues, MethodImplSpec } from "@connectrpc/connect";
import {
  Code,
  ConnectError,
  createContextKey,
  type HandlerContext,
  type Interceptor,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import {
  createMethodSerializationLookup,
  type UniversalHandlerOptions,
} from "@connectrpc/connect/protocol";
import { servingLaneKey } from "../context-keys.js";
import { jsonViolations } from "../interceptors/json-fields.js";
import type { Logger } from "../log.js";
import {
  answerOf,
  asConnectError,
  encoded,
  type Framing,
  framingOf,
  responseCompression,
  timeoutOf,
  unenvelope,
} from "./fast-lane-wire.js";
import { NodeRequestHeaders } from "./node-headers.js";
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
      .map((spec) => {
        const serialization = createMethodSerializationLookup(
          spec.method,
          opt.binaryOptions,
          opt.jsonOptions,
          opt,
        );
        return [
          `/${spec.method.parent.typeName}/${spec.method.name}` as string,
          {
            spec,
            serialization,
            encode: encoderOf(serialization),
            invoke: chainOf(spec, opt.interceptors),
          },
        ] as const;
      }),
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
    if (!authority || !validAuthority(authority)) return false;
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
      const state = new LaneCall(req, res, timeoutMs, opt.shutdownSignal, framing);
      const contextValues = options.contextValues(req).set(servingLaneKey, "fast");
      contextValues.set(laneCallKey, state);
      // connect-es's request has plain properties; these two are made on first read, and an
      // interceptor may still replace them.
      let url: string | undefined;
      let signal: AbortSignal | undefined;
      const request = {
        stream: false as const,
        message: input,
        method: lane.spec.method,
        service: lane.spec.method.parent,
        requestMethod: "POST",
        get url() {
          url ??= urlOf(req, authority);
          return url;
        },
        set url(value: string) {
          url = value;
        },
        get signal() {
          signal ??= state.signal;
          return signal;
        },
        set signal(value: AbortSignal) {
          signal = value;
        },
        header: new NodeRequestHeaders(headers),
        contextValues,
      };
      const compression = responseCompression(framing.wire, header, opt.acceptCompression);
      let output: Uint8Array | undefined;
      let error: ReturnType<typeof asConnectError> | undefined;
      try {
        const answered = await lane.invoke(request as never);
        state.settle(answered);
        output = lane.encode(framing.binary, answered.message);
      } catch (e) {
        error = asConnectError(e);
        state.end(e);
      } finally {
        // Ends the deadline and the signal's links to the request and the shutdown, if the
        // call asked for its signal at all.
        state.end(callOver);
      }
      try {
        const answer = await answerOf(framing, {
          header: state.header,
          trailer: state.trailer,
          output,
          error,
          compression,
          compressMinBytes: opt.compressMinBytes,
          jsonOptions: opt.jsonOptions,
        });
        // Both have these four; TypeScript cannot call the union's overloads.
        const out = res as ServerResponse;
        out.writeHead(answer.status, answer.header);
        for (const chunk of answer.chunks) out.write(chunk);
        if (answer.trailer) out.addTrailers(answer.trailer);
        out.end();
      } catch {
        // The client went away while the answer was written: there is no one to tell.
        res.destroy();
      }
    };
    return true;
  };
}

/**
 * The method's answer encoder. A frozen message cannot change, so its bytes are kept for as
 * long as it lives and it is encoded once (a cached token's Introspect answer is one, see
 * introspectResponseOf); any other message is encoded on each call.
 */
function encoderOf(serialization: ReturnType<typeof createMethodSerializationLookup>) {
  const kept = {
    binary: new WeakMap<object, Uint8Array>(),
    json: new WeakMap<object, Uint8Array>(),
  };
  return (binary: boolean, message: Message): Uint8Array => {
    if (!Object.isFrozen(message)) return serialization.getO(binary).serialize(message);
    const bytes = binary ? kept.binary : kept.json;
    let encoded = bytes.get(message);
    if (!encoded) {
      encoded = serialization.getO(binary).serialize(message);
      bytes.set(message, encoded);
    }
    return encoded;
  };
}

/** The reason a finished call's signal is aborted with. */
const callOver = new ConnectError("the call is over", Code.Canceled);

/** The call of a request, for the implementation at the end of the lane's chain. */
const laneCallKey = createContextKey<LaneCall | undefined>(undefined, {
  description: "fast lane call",
});

/**
 * The router's interceptors around the method's implementation, wrapped once per method
 * rather than on every call (connect-es's invokeUnaryImplementation wraps them per call). The
 * implementation gets the handler context connect-es would give it (mergeRequest: the
 * request's service, headers, signal and context values over the call's context).
 */
function chainOf(spec: UnarySpec, interceptors: readonly Interceptor[]) {
  const output = spec.method.output;
  const end = async (req: UnaryRequest) => {
    const call = req.contextValues.get(laneCallKey);
    if (!call) throw new ConnectError("the lane's call is missing", Code.Internal);
    const context: HandlerContext = {
      method: spec.method,
      service: req.service,
      requestMethod: req.requestMethod,
      protocolName: call.framing.protocolName,
      get url() {
        return req.url;
      },
      get signal() {
        return req.signal;
      },
      timeoutMs: call.remainingMs,
      requestHeader: req.header,
      get responseHeader() {
        return call.responseHeader;
      },
      get responseTrailer() {
        return call.responseTrailer;
      },
      values: req.contextValues,
    };
    return call.answer(create(output, await spec.impl(req.message as never, context)), req);
  };
  let next = end as (req: UnaryRequest) => Promise<UnaryResponse>;
  for (const interceptor of [...interceptors].reverse()) next = interceptor(next as never) as never;
  return next;
}

/**
 * What one call holds beyond its request: its response headers and trailers, made when
 * something touches them (the framing's own otherwise), and its signal, made when something
 * asks for it, aborted as connect-node and connect-es abort a handler's: at the deadline, when
 * the client goes away (an HTTP/2 reset, an HTTP/1.1 connection closed or failed), at
 * shutdown, and when the call is over. A signal first asked for after one of these is
 * aborted already.
 */
class LaneCall {
  header: Headers | undefined;
  trailer: Headers | undefined;
  private controller: AbortController | undefined;
  private cleanup: (() => void) | undefined;
  private readonly deadline: number | undefined;
  /** Why the call ended, once it has. */
  private over: { reason: unknown } | undefined;
  /** The answer the implementation's end of the chain built, and what was assigned to it. */
  private own: UnaryResponse | undefined;
  private assigned: { header?: Headers; trailer?: Headers } = {};

  constructor(
    private readonly req: NodeServerRequest,
    private readonly res: NodeServerResponse,
    timeoutMs: number | undefined,
    private readonly shutdown: AbortSignal | undefined,
    readonly framing: Framing,
  ) {
    this.deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
  }

  readonly remainingMs = () =>
    this.deadline === undefined ? undefined : this.deadline - Date.now();

  get responseHeader(): Headers {
    this.header ??= new Headers(this.framing.responseHeader);
    return this.header;
  }

  get responseTrailer(): Headers {
    this.trailer ??= new Headers(this.framing.responseTrailer);
    return this.trailer;
  }

  /**
   * The implementation's answer, as connect-es's: plain, enumerable properties (an
   * interceptor may spread it or assign its header and trailer), whose header and trailer are
   * the call's, made only when read.
   */
  answer(message: unknown, req: UnaryRequest): UnaryResponse {
    const call = this;
    const answer = {
      stream: false as const,
      message,
      method: req.method,
      service: req.service,
      get header(): Headers {
        return call.assigned.header ?? call.responseHeader;
      },
      set header(value: Headers) {
        call.assigned.header = value;
      },
      get trailer(): Headers {
        return call.assigned.trailer ?? call.responseTrailer;
      },
      set trailer(value: Headers) {
        call.assigned.trailer = value;
      },
    } as UnaryResponse;
    this.own = answer;
    return answer;
  }

  /** What the chain answered: headers and trailers of its own become the call's (copyHeaders). */
  settle(answered: UnaryResponse): void {
    const own = answered === this.own;
    const header = own ? this.assigned.header : answered.header;
    const trailer = own ? this.assigned.trailer : answered.trailer;
    if (header !== undefined && header !== this.header) copyHeaders(header, this.responseHeader);
    if (trailer !== undefined && trailer !== this.trailer)
      copyHeaders(trailer, this.responseTrailer);
  }

  get signal(): AbortSignal {
    if (this.controller) return this.controller.signal;
    const controller = new AbortController();
    this.controller = controller;
    const abort = (reason: unknown) => {
      this.cleanup?.();
      this.cleanup = undefined;
      if (!controller.signal.aborted) controller.abort(reason);
    };
    const remaining = this.remainingMs();
    const gone = clientGone(this.req, this.res);
    if (this.over) abort(this.over.reason);
    else if (remaining !== undefined && remaining <= 0) abort(timedOut());
    else if (this.shutdown?.aborted) abort(this.shutdown.reason);
    else if (gone.now) abort(gone.reason());
    else {
      const shutdown = () => abort(this.shutdown?.reason);
      const left = () => abort(gone.reason());
      const timer =
        remaining === undefined ? undefined : setTimeout(() => abort(timedOut()), remaining);
      this.cleanup = () => {
        clearTimeout(timer);
        gone.off(left);
        this.shutdown?.removeEventListener("abort", shutdown);
      };
      gone.on(left);
      this.shutdown?.addEventListener("abort", shutdown, { once: true });
    }
    return controller.signal;
  }

  /** The call is over (or failed with `reason`): a signal that was asked for is aborted. */
  end(reason: unknown): void {
    this.over ??= { reason };
    this.cleanup?.();
    this.cleanup = undefined;
    if (this.controller && !this.controller.signal.aborted) this.controller.abort(reason);
  }
}

const timedOut = () => new ConnectError("the operation timed out", Code.DeadlineExceeded);

/**
 * When and why the client of a request is gone, as connect-node tells its handlers: over
 * HTTP/2 the stream closed (a reset names its reason), over HTTP/1.1 the response closed or
 * the request failed.
 */
function clientGone(req: NodeServerRequest, res: NodeServerResponse) {
  if ("stream" in req) {
    const stream = req.stream;
    return {
      now: stream.closed || stream.destroyed,
      reason: () => resetReason(stream.rstCode),
      on: (f: () => void) => req.once("close", f),
      off: (f: () => void) => req.off("close", f),
    };
  }
  return {
    now: res.destroyed || req.errored !== null,
    reason: () => (req.errored ? nodeReason(req.errored) : undefined),
    on: (f: () => void) => {
      req.once("error", f);
      res.once("close", f);
    },
    off: (f: () => void) => {
      req.off("error", f);
      res.off("close", f);
    },
  };
}

/** HTTP/2's error codes by number (RFC 9113, section 7). */
const resetNames = [
  "NO_ERROR",
  "PROTOCOL_ERROR",
  "INTERNAL_ERROR",
  "FLOW_CONTROL_ERROR",
  "SETTINGS_TIMEOUT",
  "STREAM_CLOSED",
  "FRAME_SIZE_ERROR",
  "REFUSED_STREAM",
  "CANCEL",
  "COMPRESSION_ERROR",
  "CONNECT_ERROR",
  "ENHANCE_YOUR_CALM",
  "INADEQUATE_SECURITY",
  "HTTP_1_1_REQUIRED",
] as const;

/** The code connect-node gives a handler's signal for each reset (none for a normal close). */
const resetCodes: Partial<Record<(typeof resetNames)[number], Code>> = {
  PROTOCOL_ERROR: Code.Internal,
  INTERNAL_ERROR: Code.Internal,
  FLOW_CONTROL_ERROR: Code.Internal,
  SETTINGS_TIMEOUT: Code.Internal,
  FRAME_SIZE_ERROR: Code.Internal,
  COMPRESSION_ERROR: Code.Internal,
  CONNECT_ERROR: Code.Internal,
  REFUSED_STREAM: Code.Unavailable,
  CANCEL: Code.Canceled,
  ENHANCE_YOUR_CALM: Code.ResourceExhausted,
  INADEQUATE_SECURITY: Code.PermissionDenied,
  HTTP_1_1_REQUIRED: Code.PermissionDenied,
};

/** connect-node's error for an HTTP/2 reset code. */
function resetReason(rstCode: number | undefined): ConnectError | undefined {
  const name = rstCode === undefined ? undefined : resetNames[rstCode];
  const code = name === undefined ? undefined : resetCodes[name];
  if (code === undefined || rstCode === undefined) return undefined;
  return new ConnectError(
    `http/2 stream closed with error code ${name} (0x${rstCode.toString(16)})`,
    code,
  );
}

/** connect-node's error for a failed HTTP/1.1 request: a client that hung up is ABORTED. */
function nodeReason(reason: Error): ConnectError {
  const code = (reason as { code?: unknown }).code;
  const hungUp = code === "ECONNRESET" || code === "ERR_STREAM_DESTROYED";
  return ConnectError.from(reason, hungUp ? Code.Aborted : Code.Internal);
}

/** A request authority a URL can be built with, as connect-node builds it (memo of the last). */
let lastAuthority = "";
function validAuthority(authority: string): boolean {
  if (authority === lastAuthority) return true;
  if (!URL.canParse(`http://${authority}`)) return false;
  lastAuthority = authority;
  return true;
}

/** The request's URL as connect-node builds it. */
function urlOf(req: NodeServerRequest, authority: string): string {
  const scheme = "encrypted" in req.socket && req.socket.encrypted ? "https" : "http";
  return new URL(req.url ?? "", `${scheme}://${authority}`).toString();
}

/** connect-es's copyHeaders: `to` becomes `from`. */
function copyHeaders(from: Headers, to: Headers): void {
  if (from === to) return;
  const keys: string[] = [];
  to.forEach((_, key) => {
    keys.push(key);
  });
  for (const key of keys) to.delete(key);
  from.forEach((value, key) => {
    to.set(key, value);
  });
}
