import { randomUUID } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import path from "node:path";
import { Writable } from "node:stream";
import { gzipSync } from "node:zlib";
import {
  create,
  type DescMessage,
  type MessageInitShape,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import { type Client, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckRequestSchema } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import {
  GetJwksRequestSchema,
  IntrospectBatchRequestSchema,
  IntrospectRequestSchema,
  TokenIntrospectionService,
  TokenTypeHint,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import { AdminKeyRole } from "../gen/keygate/v1/types_pb.js";
import { bearer, type Provisioner, signedIn } from "./support/fixtures.js";
import { startPeerKeygate, startTestKeygate, type TestKeygate } from "./support/server.js";

/**
 * The lean unary lane against the general one: two instances on one database, with
 * KEYGATE_FAST_LANE on and off, get the same requests, valid and not, over every protocol, and
 * must answer the same status, headers, trailers and bytes. The call log of the first says
 * which calls its lane served.
 */

let fast: TestKeygate;
let general: TestKeygate;
const logLines: Record<string, unknown>[] = [];
let rootKey: string;
let otherWorkspaceKey: string;
let access: string;
let refresh: string;

const introspectPath = "/keygate.v1.TokenIntrospectionService/Introspect";
const batchPath = "/keygate.v1.TokenIntrospectionService/IntrospectBatch";
const jwksPath = "/keygate.v1.TokenIntrospectionService/GetJwks";
const checkPath = "/envoy.service.auth.v3.Authorization/Check";

beforeAll(async () => {
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) logLines.push(JSON.parse(line));
      done();
    },
  });
  fast = await startTestKeygate(
    {
      KEYGATE_FAST_LANE: "true",
      KEYGATE_LOG_SAMPLE_EVERY: "1",
      KEYGATE_MAX_REQUEST_BYTES: "16384",
    },
    { logTo: sink },
  );
  general = await startPeerKeygate(fast, { KEYGATE_FAST_LANE: "false" });
  rootKey = fast.bootstrapped?.adminKey as string;
  const transport = createConnectTransport({ baseUrl: fast.url, httpVersion: "2" });
  const admin = createClient(AdminService, transport);
  const by: Provisioner = {
    admin,
    auth: createClient(AuthService, transport),
    adminKey: rootKey,
    workspaceId: fast.bootstrapped?.workspaceId as string,
  };
  const user = await signedIn(by, "lane");
  access = user.accessToken;
  refresh = user.refreshToken;
  const other = await admin.createWorkspace(
    { name: "Other", slug: `other-${Date.now()}` },
    bearer(rootKey),
  );
  const key = await admin.createAdminKey(
    {
      name: "gateway",
      workspaceId: other.workspace?.id ?? "",
      role: AdminKeyRole.READ_ONLY,
      introspect: true,
    },
    bearer(rootKey),
  );
  otherWorkspaceKey = key.secret;
});
afterAll(async () => {
  await general?.stop();
  await fast?.stop();
});

interface Answer {
  status: number;
  headers: Record<string, unknown>;
  trailers: Record<string, unknown>;
  body: string; // base64
}

/** Headers that differ between any two answers (the clock, the connection). */
const ignored = new Set(["date", "connection", "keep-alive", "transfer-encoding"]);
const kept = (headers: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(headers).filter(([k]) => !ignored.has(k)));

function h2(
  url: string,
  path: string,
  headers: Record<string, string>,
  body: Uint8Array,
): Promise<Answer> {
  const session = http2.connect(url);
  return new Promise<Answer>((resolve, reject) => {
    session.once("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, ...headers });
    const chunks: Buffer[] = [];
    let status = 0;
    let head: Record<string, unknown> = {};
    let trailers: Record<string, unknown> = {};
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      head = kept(h);
    });
    stream.on("trailers", (t) => {
      trailers = { ...t };
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", reject);
    stream.on("end", () =>
      resolve({ status, headers: head, trailers, body: Buffer.concat(chunks).toString("base64") }),
    );
    stream.end(body);
  }).finally(() => session.close());
}

function h1(
  url: string,
  path: string,
  headers: Record<string, string>,
  body: Uint8Array,
): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    // Without a declared length the body goes chunked (Node would otherwise count it).
    const sent =
      "content-length" in headers ? headers : { ...headers, "transfer-encoding": "chunked" };
    const req = http.request(new URL(path, url), { method: "POST", headers: sent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: kept(res.headers),
          trailers: { ...res.trailers },
          body: Buffer.concat(chunks).toString("base64"),
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

const envelope = (bytes: Uint8Array, flags = 0) => {
  const out = Buffer.alloc(bytes.byteLength + 5);
  out[0] = flags;
  out.writeUInt32BE(bytes.byteLength, 1);
  out.set(bytes, 5);
  return out;
};
const proto = <D extends DescMessage>(schema: D, init: MessageInitShape<D>) =>
  toBinary(schema, create(schema, init));

type Protocol = "grpc" | "grpc+proto" | "grpc-web" | "connect-proto" | "connect-json";
const contentTypes: Record<Protocol, string> = {
  grpc: "application/grpc",
  "grpc+proto": "application/grpc+proto",
  "grpc-web": "application/grpc-web+proto",
  "connect-proto": "application/proto",
  "connect-json": "application/json",
};

interface Case {
  name: string;
  path?: string;
  /** The request message, framed for each protocol. */
  message?: { proto: Uint8Array; json: string };
  /** Raw bytes instead, sent as they are (no envelope added). */
  raw?: Partial<Record<Protocol, Uint8Array>>;
  auth?: string | null;
  headers?: Record<string, string>;
  /** Sent without a content-length (chunked over HTTP/1.1). */
  undeclared?: boolean;
  /** Whether the lean lane serves the call (else it hands it over). */
  lane: boolean | ((protocol: Protocol) => boolean);
}

const introspect = (init: MessageInitShape<typeof IntrospectRequestSchema>) => ({
  proto: proto(IntrospectRequestSchema, init),
  json: toJsonString(IntrospectRequestSchema, create(IntrospectRequestSchema, init)),
});

function cases(): Case[] {
  return [
    { name: "an unknown token", message: introspect({ token: "not-a-token" }), lane: true },
    { name: "an active access token", message: introspect({ token: access }), lane: true },
    { name: "a refresh token without a hint", message: introspect({ token: refresh }), lane: true },
    {
      name: "a refresh token with its hint",
      message: introspect({ token: refresh, tokenTypeHint: TokenTypeHint.REFRESH_TOKEN }),
      lane: true,
    },
    { name: "an empty token", message: introspect({ token: "" }), lane: true },
    { name: "a token with NUL", message: introspect({ token: "a\0b" }), lane: true },
    { name: "a long token", message: introspect({ token: "x".repeat(12_000) }), lane: true },
    {
      name: "a body over the size limit",
      message: introspect({ token: "x".repeat(20_000) }),
      lane: false,
    },
    {
      name: "no declared length",
      message: introspect({ token: access }),
      undeclared: true,
      // The general path checks JSON fields only against a declared length: JSON goes there.
      lane: (protocol) => protocol !== "connect-json",
    },
    {
      name: "a body over the size limit, its length not declared",
      message: introspect({ token: "x".repeat(20_000) }),
      undeclared: true,
      lane: false,
    },
    {
      name: "a resource",
      message: introspect({ token: access, resource: "https://api.example.test" }),
      lane: true,
    },
    { name: "no admin key", message: introspect({ token: access }), auth: null, lane: true },
    {
      name: "an invalid admin key",
      message: introspect({ token: access }),
      auth: "kg_not_a_key",
      lane: true,
    },
    {
      name: "a malformed authorization",
      message: introspect({ token: access }),
      auth: "Basic abc",
      lane: true,
    },
    {
      name: "another workspace's key",
      message: introspect({ token: access }),
      auth: "other",
      lane: true,
    },
    {
      name: "a user's access token as the caller",
      message: introspect({ token: access }),
      auth: access,
      lane: true,
    },
    {
      name: "a deadline",
      message: introspect({ token: access }),
      headers: { "grpc-timeout": "5S", "connect-timeout-ms": "5000" },
      lane: true,
    },
    {
      name: "a deadline over the maximum",
      message: introspect({ token: access }),
      headers: { "grpc-timeout": "100H", "connect-timeout-ms": "360000000" },
      lane: false,
    },
    {
      name: "an invalid deadline",
      message: introspect({ token: access }),
      headers: { "grpc-timeout": "soon", "connect-timeout-ms": "soon" },
      lane: false,
    },
    {
      name: "an accepted compression",
      message: introspect({ token: access }),
      headers: { "grpc-accept-encoding": "gzip", "accept-encoding": "gzip" },
      lane: true,
    },
    {
      name: "a compressed request",
      raw: {
        grpc: envelope(gzipSync(proto(IntrospectRequestSchema, { token: access })), 1),
        "grpc-web": envelope(gzipSync(proto(IntrospectRequestSchema, { token: access })), 1),
        "connect-proto": gzipSync(proto(IntrospectRequestSchema, { token: access })),
        "connect-json": gzipSync(JSON.stringify({ token: access })),
      },
      headers: { "grpc-encoding": "gzip", "content-encoding": "gzip" },
      lane: false,
    },
    {
      name: "a compressed envelope without its encoding",
      raw: {
        grpc: envelope(gzipSync(proto(IntrospectRequestSchema, { token: access })), 1),
        "grpc-web": envelope(gzipSync(proto(IntrospectRequestSchema, { token: access })), 1),
      },
      lane: false,
    },
    {
      name: "malformed protobuf",
      raw: {
        grpc: envelope(Buffer.from([0x0a, 0xff, 0xff])),
        "grpc-web": envelope(Buffer.from([0x0a, 0xff, 0xff])),
        "connect-proto": Buffer.from([0x0a, 0xff, 0xff]),
      },
      lane: false,
    },
    {
      name: "a truncated envelope",
      raw: {
        grpc: envelope(proto(IntrospectRequestSchema, { token: access })).subarray(0, 12),
        "grpc-web": envelope(proto(IntrospectRequestSchema, { token: access })).subarray(0, 12),
      },
      lane: false,
    },
    {
      name: "two envelopes",
      raw: {
        grpc: Buffer.concat([envelope(new Uint8Array()), envelope(new Uint8Array())]),
        "grpc-web": Buffer.concat([envelope(new Uint8Array()), envelope(new Uint8Array())]),
      },
      lane: false,
    },
    {
      name: "no envelope",
      raw: { grpc: new Uint8Array(), "grpc-web": new Uint8Array() },
      lane: false,
    },
    {
      name: "malformed JSON",
      raw: { "connect-json": Buffer.from('{"token": ') },
      lane: false,
    },
    {
      name: "an unknown JSON field",
      raw: { "connect-json": Buffer.from('{"token": "x", "tokn": "y"}') },
      lane: false,
    },
    {
      name: "a JSON field of the wrong type",
      raw: { "connect-json": Buffer.from('{"token": 5}') },
      lane: false,
    },
    {
      name: "a JSON enum by number",
      raw: { "connect-json": Buffer.from(`{"token": "${refresh}", "tokenTypeHint": 2}`) },
      lane: true,
    },
    {
      name: "IntrospectBatch",
      path: batchPath,
      message: {
        proto: proto(IntrospectBatchRequestSchema, {
          tokens: [{ token: access }, { token: refresh }, { token: "nope" }],
        }),
        json: JSON.stringify({
          tokens: [{ token: access }, { token: refresh }, { token: "nope" }],
        }),
      },
      lane: true,
    },
    {
      name: "IntrospectBatch with an answer large enough to compress",
      path: batchPath,
      message: {
        proto: proto(IntrospectBatchRequestSchema, {
          tokens: Array.from({ length: 10 }, () => ({ token: access })),
        }),
        json: JSON.stringify({ tokens: Array.from({ length: 10 }, () => ({ token: access })) }),
      },
      headers: { "grpc-accept-encoding": "gzip", "accept-encoding": "gzip" },
      lane: true,
    },
    {
      name: "IntrospectBatch without a key",
      path: batchPath,
      message: {
        proto: proto(IntrospectBatchRequestSchema, { tokens: [{ token: access }] }),
        json: JSON.stringify({ tokens: [{ token: access }] }),
      },
      auth: null,
      lane: true,
    },
    {
      name: "GetJwks",
      path: jwksPath,
      message: { proto: proto(GetJwksRequestSchema, {}), json: "{}" },
      auth: null,
      lane: true,
    },
    {
      name: "Envoy Check",
      path: checkPath,
      message: checkOf(access),
      lane: true,
    },
    {
      name: "Envoy Check with a refresh token",
      path: checkPath,
      message: checkOf(refresh),
      lane: true,
    },
  ];
}

function checkOf(token: string) {
  const headers = { authorization: `Bearer ${token}`, "x-workspace-id": "nope" };
  return {
    proto: proto(CheckRequestSchema, {
      attributes: { request: { http: { headers } } },
    }),
    json: JSON.stringify({ attributes: { request: { http: { headers } } } }),
  };
}

function bodyFor(c: Case, protocol: Protocol): Uint8Array | undefined {
  if (c.raw) return c.raw[protocol === "grpc+proto" ? "grpc" : protocol];
  if (!c.message) return undefined;
  if (protocol === "connect-json") return Buffer.from(c.message.json);
  if (protocol === "connect-proto") return c.message.proto;
  return envelope(c.message.proto);
}

function headersFor(c: Case, protocol: Protocol, requestId: string, length: number) {
  const auth =
    c.auth === null ? undefined : c.auth === "other" ? otherWorkspaceKey : (c.auth ?? rootKey);
  const grpcFamily = protocol.startsWith("grpc");
  const extra = Object.fromEntries(
    Object.entries(c.headers ?? {}).filter(([k]) =>
      grpcFamily ? k.startsWith("grpc-") : !k.startsWith("grpc-"),
    ),
  );
  return {
    "content-type": contentTypes[protocol],
    "x-request-id": requestId,
    ...(protocol.startsWith("connect") && !c.undeclared
      ? { "content-length": String(length) }
      : {}),
    ...(protocol === "grpc" || protocol === "grpc+proto" ? { te: "trailers" } : {}),
    ...(auth ? { authorization: auth.includes(" ") ? auth : `Bearer ${auth}` } : {}),
    ...extra,
  };
}

const servedBy = (requestId: string) =>
  logLines.filter((l) => l.requestId === requestId && l.msg === "call").map((l) => l.lane);

describe.each([
  ["HTTP/2", "grpc", h2],
  ["HTTP/2", "grpc+proto", h2],
  ["HTTP/2", "grpc-web", h2],
  ["HTTP/2", "connect-proto", h2],
  ["HTTP/2", "connect-json", h2],
  ["HTTP/1.1", "grpc", h1],
  ["HTTP/1.1", "grpc-web", h1],
  ["HTTP/1.1", "connect-proto", h1],
  ["HTTP/1.1", "connect-json", h1],
] as const)("over %s, %s", (wire, protocol, send) => {
  // gRPC needs HTTP/2's trailers: over HTTP/1.1 the lane leaves it to the general path.
  const laneTakes = (c: Case) =>
    !(wire === "HTTP/1.1" && protocol === "grpc") &&
    (typeof c.lane === "function" ? c.lane(protocol) : c.lane);
  it("answers every request as the general lane does", async () => {
    let served = 0;
    for (const c of cases()) {
      const body = bodyFor(c, protocol);
      if (body === undefined) continue;
      const requestId = randomUUID();
      const headers = headersFor(c, protocol, requestId, body.byteLength);
      const path = c.path ?? introspectPath;
      const viaFast = await send(fast.url, path, headers, body);
      const viaGeneral = await send(general.url, path, headers, body);
      expect({ case: c.name, ...viaFast }).toEqual({ case: c.name, ...viaGeneral });
      expect(viaFast.status, c.name).toBeGreaterThan(0);
      if (c.path === batchPath && c.headers) {
        // The answer is over compressMinBytes: compressed, as connect-es compresses it.
        expect(Object.values(viaFast.headers), c.name).toContain("gzip");
      }
      const lanes = servedBy(requestId);
      if (laneTakes(c)) {
        expect(lanes, c.name).toEqual(["fast"]);
        served++;
      } else {
        expect(lanes, c.name).not.toContain("fast");
      }
    }
    if (wire === "HTTP/1.1" && protocol === "grpc") expect(served).toBe(0);
    else expect(served).toBeGreaterThan(10);
  });

  it("answers a wrong content type as the general lane does", async () => {
    const body = envelope(proto(IntrospectRequestSchema, { token: access }));
    for (const type of ["text/plain", "application/grpc+json", "application/grpc-web-text", ""]) {
      const requestId = randomUUID();
      const headers = {
        "content-type": type,
        "x-request-id": requestId,
        authorization: `Bearer ${rootKey}`,
      };
      const viaFast = await send(fast.url, introspectPath, headers, body);
      const viaGeneral = await send(general.url, introspectPath, headers, body);
      expect({ type, ...viaFast }).toEqual({ type, ...viaGeneral });
      expect(servedBy(requestId)).not.toContain("fast");
    }
  });
});

describe("stock clients", () => {
  const clients = (url: string) => {
    const transports: Record<string, Transport> = {
      "connect-json": createConnectTransport({ baseUrl: url, httpVersion: "2" }),
      "connect-proto": createConnectTransport({
        baseUrl: url,
        httpVersion: "2",
        useBinaryFormat: true,
      }),
      "connect-http1": createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
      grpc: createGrpcTransport({ baseUrl: url }),
      "grpc-web": createGrpcWebTransport({ baseUrl: url, httpVersion: "2" }),
    };
    return Object.entries(transports).map(
      ([name, t]) => [name, createClient(TokenIntrospectionService, t)] as const,
    );
  };
  const outcome = async (
    client: Client<typeof TokenIntrospectionService>,
    token: string,
    key: string | undefined,
  ) => {
    try {
      const headers = key ? { authorization: `Bearer ${key}` } : undefined;
      return { message: await client.introspect({ token }, { headers }) };
    } catch (error) {
      const ce = ConnectError.from(error);
      return { code: ce.code, message: ce.rawMessage, details: ce.details };
    }
  };

  it("get the same answers and errors from the generated client", async () => {
    const viaFast = clients(fast.url);
    const viaGeneral = clients(general.url);
    for (const [i, [name, client]] of viaFast.entries()) {
      const other = viaGeneral[i]?.[1] as Client<typeof TokenIntrospectionService>;
      for (const [token, key] of [
        [access, rootKey],
        ["nope", rootKey],
        [refresh, rootKey],
        [access, undefined],
        [access, "kg_nope"],
        [access, otherWorkspaceKey],
        ["", rootKey],
      ] as const) {
        const a = await outcome(client, token, key);
        const b = await outcome(other, token, key);
        expect({ name, ...a }).toEqual({ name, ...b });
      }
    }
    const active = await outcome(viaFast[0]?.[1] as never, access, rootKey);
    expect(active.message).toMatchObject({ active: true });
  });

  it("get the same answers and errors from @grpc/grpc-js", async () => {
    const definition = protoLoader.loadSync("keygate/v1/token_introspection_service.proto", {
      includeDirs: [path.resolve(import.meta.dirname, "../proto")],
      enums: String,
      defaults: true,
    });
    // biome-ignore lint/suspicious/noExplicitAny: proto-loader builds the client classes at run time.
    const loaded = grpc.loadPackageDefinition(definition) as any;
    type Introspection = grpc.Client & {
      introspect(
        req: unknown,
        metadata: grpc.Metadata,
        options: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, res: unknown) => void,
      ): void;
    };
    const connect = (url: string): Introspection =>
      new loaded.keygate.v1.TokenIntrospectionService(
        new URL(url).host,
        grpc.credentials.createInsecure(),
      );
    const call = (client: Introspection, token: string, key: string | undefined) =>
      new Promise((resolve) => {
        const metadata = new grpc.Metadata();
        if (key) metadata.set("authorization", `Bearer ${key}`);
        client.introspect({ token }, metadata, { deadline: Date.now() + 10_000 }, (err, res) => {
          if (!err) resolve({ res });
          else {
            const trailers = err.metadata.getMap();
            resolve({ code: err.code, details: err.details, trailers });
          }
        });
      });
    const a = connect(fast.url);
    const b = connect(general.url);
    try {
      for (const [token, key] of [
        [access, rootKey],
        ["nope", rootKey],
        [refresh, rootKey],
        [access, undefined],
        [access, "kg_nope"],
        ["a\0b", rootKey],
      ] as const) {
        expect(await call(a, token, key)).toEqual(await call(b, token, key));
      }
      expect(await call(a, access, rootKey)).toMatchObject({ res: { active: true } });
    } finally {
      a.close();
      b.close();
    }
  });
});
