import type { JsonWriteOptions } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Compression,
  compressionNegotiate,
  encodeEnvelope,
  envelopeCompress,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  parseTimeout as connectTimeout,
  errorToJsonBytes,
  trailerMux,
} from "@connectrpc/connect/protocol-connect";
import { parseTimeout as grpcTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";

/**
 * The three wire formats of a unary call as connect-es writes them (its handler factories for
 * gRPC, gRPC-Web and Connect, connect-es 2.1), built from connect-es's own helpers so that the
 * bytes, headers and trailers are the ones its general path would send. Only the plain forms:
 * identity encoding, one uncompressed envelope, protobuf or (Connect only) JSON.
 */
export type Wire = "grpc" | "grpc-web" | "connect";

export interface Framing {
  readonly wire: Wire;
  readonly binary: boolean;
  /** The name connect-es gives the protocol in the handler context. */
  readonly protocolName: "grpc" | "grpc-web" | "connect";
  /** The content type of the answer (and, for gRPC and gRPC-Web, the grpc-status trailer). */
  readonly responseHeader: Record<string, string>;
  readonly responseTrailer: Record<string, string> | undefined;
}

const grpcProto: Framing = {
  wire: "grpc",
  binary: true,
  protocolName: "grpc",
  responseHeader: { "content-type": "application/grpc+proto" },
  responseTrailer: { "grpc-status": "0" },
};
const grpcWebProto: Framing = {
  wire: "grpc-web",
  binary: true,
  protocolName: "grpc-web",
  responseHeader: { "content-type": "application/grpc-web+proto" },
  responseTrailer: { "grpc-status": "0" },
};
const connectProto: Framing = {
  wire: "connect",
  binary: true,
  protocolName: "connect",
  responseHeader: { "content-type": "application/proto" },
  responseTrailer: undefined,
};
const connectJson: Framing = {
  wire: "connect",
  binary: false,
  protocolName: "connect",
  responseHeader: { "content-type": "application/json" },
  responseTrailer: undefined,
};

/**
 * The framing of a request by its content type, when the lane takes it: gRPC only over
 * HTTP/2 (it needs trailers), JSON only for Connect (gRPC's and gRPC-Web's JSON are rare
 * enough to leave to the general path).
 */
export function framingOf(contentType: string | undefined, http2: boolean): Framing | undefined {
  switch (contentType?.toLowerCase()) {
    case "application/grpc":
    case "application/grpc+proto":
      return http2 ? grpcProto : undefined;
    case "application/grpc-web":
    case "application/grpc-web+proto":
      return grpcWebProto;
    case "application/proto":
      return connectProto;
    case "application/json":
    case "application/json; charset=utf-8":
    case "application/json;charset=utf-8":
      return connectJson;
    default:
      return undefined;
  }
}

type Header = (name: string) => string | undefined;

/** A request whose encoding the lane would have to act on: left to the general path. */
export function encoded(wire: Wire, header: Header): boolean {
  if (wire === "connect") {
    return (
      header("content-encoding") !== undefined || header("connect-content-encoding") !== undefined
    );
  }
  const encoding = header("grpc-encoding");
  return encoding !== undefined && encoding !== "identity";
}

/** The call's timeout, or "refused" for one connect-es would refuse (left to it). */
export function timeoutOf(
  wire: Wire,
  header: Header,
  maxTimeoutMs: number,
): number | undefined | "refused" {
  const parsed =
    wire === "connect"
      ? connectTimeout(header("connect-timeout-ms") ?? null, maxTimeoutMs)
      : grpcTimeout(header("grpc-timeout") ?? null, maxTimeoutMs);
  return parsed.error ? "refused" : parsed.timeoutMs;
}

/** The compression of the answer, as connect-es negotiates it from the accept header. */
export function responseCompression(
  wire: Wire,
  header: Header,
  available: readonly Compression[],
): Compression | null {
  const accept = wire === "connect" ? "accept-encoding" : "grpc-accept-encoding";
  return compressionNegotiate([...available], null, header(accept) ?? null, accept).response;
}

/** The message of a one-envelope body, or undefined for anything else (compressed included). */
export function unenvelope(body: Uint8Array): Uint8Array | undefined {
  if (body.byteLength < 5 || body[0] !== 0) return undefined;
  const length = new DataView(body.buffer, body.byteOffset, 5).getUint32(1);
  return length === body.byteLength - 5 ? body.subarray(5) : undefined;
}

export interface Answer {
  readonly status: number;
  readonly header: NodeHeaders;
  /** Written in order, as connect-node writes a body's chunks. */
  readonly chunks: readonly Uint8Array[];
  readonly trailer: NodeHeaders | undefined;
}

type NodeHeaders = Record<string, string | string[]>;

/** gRPC-Web's trailer frame of a call that succeeded and set no trailer of its own. */
const okTrailerFrame = encodeEnvelope(
  trailerFlag,
  trailerSerialize(new Headers(grpcWebProto.responseTrailer)),
);

/**
 * The answer connect-es gives: `output` is the serialized response message, or undefined
 * with `error` for a failed call. `header` and `trailer` are the call's response headers and
 * trailers when the call touched them; untouched, they are the framing's own.
 */
export async function answerOf(
  framing: Framing,
  call: {
    header: Headers | undefined;
    trailer: Headers | undefined;
    output: Uint8Array | undefined;
    error: ConnectError | undefined;
    compression: Compression | null;
    compressMinBytes: number;
    jsonOptions: Partial<JsonWriteOptions> | undefined;
  },
): Promise<Answer> {
  const { compression, compressMinBytes, error } = call;
  const plain = !call.header && !call.trailer && !error;
  const envelope = async (flags: number, data: Uint8Array) => {
    const e = await envelopeCompress({ flags, data }, compression, compressMinBytes);
    return encodeEnvelope(e.flags, e.data);
  };
  if (framing.wire === "connect") {
    let body = call.output ?? new Uint8Array();
    const compressed = compression !== null && body.byteLength >= compressMinBytes;
    if (plain) {
      if (compressed) body = await compression.compress(body);
      const header: NodeHeaders = { ...framing.responseHeader };
      if (compressed) header["content-encoding"] = compression.name;
      header["content-length"] = body.byteLength.toString(10);
      return { status: 200, header, chunks: [body], trailer: undefined };
    }
    const header = call.header ?? new Headers(framing.responseHeader);
    let status = 200;
    if (error) {
      status = codeToHttpStatus(error.code);
      header.set("content-type", "application/json");
      error.metadata.forEach((value, key) => {
        header.set(key, value);
      });
      body = errorToJsonBytes(error, call.jsonOptions);
    }
    if (compression && body.byteLength >= compressMinBytes) {
      body = await compression.compress(body);
      header.set("content-encoding", compression.name);
    }
    const muxed = trailerMux(header, call.trailer ?? new Headers(framing.responseTrailer));
    muxed.set("content-length", body.byteLength.toString(10));
    return { status, header: nodeHeaders(muxed), chunks: [body], trailer: undefined };
  }
  const chunks = call.output ? [await envelope(0, call.output)] : [];
  if (plain) {
    const header: NodeHeaders = { ...framing.responseHeader };
    if (compression) header["grpc-encoding"] = compression.name;
    if (framing.wire === "grpc")
      return { status: 200, header, chunks, trailer: { ...framing.responseTrailer } };
    chunks.push(
      compression
        ? await envelope(trailerFlag, trailerSerialize(new Headers(framing.responseTrailer)))
        : okTrailerFrame,
    );
    return { status: 200, header, chunks, trailer: undefined };
  }
  const header = call.header ?? new Headers(framing.responseHeader);
  const trailer = call.trailer ?? new Headers(framing.responseTrailer);
  if (compression) header.set("grpc-encoding", compression.name);
  if (error) setTrailerStatus(trailer, error);
  if (framing.wire === "grpc")
    return { status: 200, header: nodeHeaders(header), chunks, trailer: nodeHeaders(trailer) };
  chunks.push(await envelope(trailerFlag, trailerSerialize(trailer)));
  return { status: 200, header: nodeHeaders(header), chunks, trailer: undefined };
}

/** A thrown value as connect-es answers it: a ConnectError as it is, anything else INTERNAL. */
export const asConnectError = (e: unknown): ConnectError =>
  e instanceof ConnectError
    ? e
    : new ConnectError("internal error", Code.Internal, undefined, undefined, e);

/** Node's header object for web Headers, as connect-node's webHeaderToNodeHeaders builds it. */
export function nodeHeaders(headers: Headers): Record<string, string | string[]> {
  const o: Record<string, string | string[]> = Object.create(null);
  headers.forEach((value, key) => {
    const existing = o[key];
    if (existing === undefined) o[key] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else o[key] = [existing, value];
  });
  return o;
}
