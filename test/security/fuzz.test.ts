import http2 from "node:http2";
import net from "node:net";
import {
  type DescField,
  type DescMessage,
  type DescService,
  fromBinary,
  ScalarType,
} from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Authorization } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { keygateServices } from "../../src/routes.js";
import { startTestKeygate, type TestKeygate } from "../support/server.js";

// SECURITY.md 22: every RPC of every service on the port, fed random, malformed and oversized
// input through the wire (raw Connect POSTs) and through real clients (random field values).

// Every service routes.ts registers, so a new one is fuzzed from its first day.
const services: DescService[] = [...keygateServices, Health];
const methods = services.flatMap((s) => s.methods.map((m) => ({ service: s, method: m })));
const unary = methods.filter((m) => m.method.methodKind === "unary");
const maxRequestBytes = 4096;

let keygate: TestKeygate;
let rootKey: string;

beforeAll(async () => {
  keygate = await startTestKeygate({ KEYGATE_MAX_REQUEST_BYTES: String(maxRequestBytes) });
  rootKey = keygate.bootstrapped?.adminKey as string;
});
afterAll(async () => {
  await keygate?.stop();
});

/** Who calls: nobody, the root admin key, or a bearer of random characters. */
const caller = fc.oneof(
  fc.constant<Record<string, string>>({}),
  fc.constant(null).map(() => ({ authorization: `Bearer ${rootKey}` })),
  fc
    .string({ maxLength: 200 })
    .map((s) => ({ authorization: `Bearer ${s.replace(/[^\x21-\x7e]/g, "x")}` })),
);

/** A Connect unary call over HTTP/1.1 as any HTTP client would send it; answers status and code. */
async function post(path: string, contentType: string, body: Uint8Array | string, headers = {}) {
  const payload: BodyInit = typeof body === "string" ? body : Buffer.from(body);
  const res = await fetch(`${keygate.url}/${path}`, {
    method: "POST",
    headers: { "content-type": contentType, ...headers },
    body: payload,
  });
  const text = await res.text();
  let code = "ok";
  if (res.status !== 200) {
    const parsed = JSON.parse(text) as { code?: string };
    code = parsed.code ?? `http ${res.status}`;
  }
  return { status: res.status, code };
}

const forbidden = ["internal", "unknown"];

/** A gRPC unary call over raw h2c with the given frame bytes; answers its grpc-status. */
async function grpcStatusOf(
  url: string,
  path: string,
  headers: Record<string, string>,
  frame: Buffer,
): Promise<string> {
  const session = http2.connect(url);
  try {
    return await new Promise<string>((resolve, reject) => {
      const stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc+proto",
        te: "trailers",
        ...headers,
      });
      let seen = "";
      stream.on("response", (h) => {
        seen = String(h["grpc-status"] ?? "");
      });
      stream.on("trailers", (t) => resolve(String(t["grpc-status"] ?? seen)));
      stream.on("end", () => resolve(seen));
      stream.on("error", reject);
      stream.resume();
      stream.end(frame);
    });
  } finally {
    session.close();
  }
}

/** Random values of a message's fields, nested messages to a small depth. */
function messageArb(desc: DescMessage, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    const arb = fieldArb(field, depth);
    if (arb) fields[field.localName] = arb;
  }
  return fc.record(fields, { requiredKeys: [] });
}

function scalarArb(scalar: number): fc.Arbitrary<unknown> {
  // ScalarType numbers from descriptor.proto.
  switch (scalar) {
    case 9: // string
      return fc.oneof(
        fc.string({ maxLength: 80 }),
        fc.string({ unit: "binary", maxLength: 40 }),
        fc.constantFrom("", " ", "00000000-0000-0000-0000-000000000000", "a@b", "\u0000", "%"),
        fc.emailAddress(),
        fc.uuid(),
      );
    case 12: // bytes
      return fc.uint8Array({ maxLength: 64 });
    case 8: // bool
      return fc.boolean();
    case 1:
    case 2: // double, float
      return fc.double();
    case 3:
    case 16:
    case 18:
    case 4:
    case 6:
    case 15: // 64-bit
      return fc
        .bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })
        .map((n) => (scalar === 4 || scalar === 6 ? (n < 0n ? -n : n) : n));
    case 13:
    case 7: // uint32, fixed32
      return fc.nat();
    default: // int32, sint32, sfixed32
      return fc.integer();
  }
}

function fieldArb(field: DescField, depth: number): fc.Arbitrary<unknown> | undefined {
  switch (field.fieldKind) {
    case "scalar":
      return scalarArb(field.scalar);
    case "enum":
      return fc.integer({ min: -1, max: 8 });
    case "message":
      if (depth > 2) return undefined;
      return messageArb(field.message, depth + 1);
    case "list":
      if (field.listKind === "scalar") return fc.array(scalarArb(field.scalar), { maxLength: 4 });
      if (field.listKind === "enum")
        return fc.array(fc.integer({ min: 0, max: 8 }), { maxLength: 4 });
      if (depth > 2) return undefined;
      return fc.array(messageArb(field.message, depth + 1), { maxLength: 3 });
    case "map":
      if (field.mapKind !== "scalar") return undefined;
      return fc.dictionary(
        fc.string({ maxLength: 20 }),
        scalarArb(field.scalar) as fc.Arbitrary<never>,
        {
          maxKeys: 4,
        },
      );
  }
}

describe("SECURITY.md 22: random, malformed and oversized input to every RPC", {
  timeout: 180_000,
}, () => {
  it(`covers ${unary.length} unary RPCs of ${services.length} services`, () => {
    expect(services.map((s) => s.typeName)).toContain("envoy.service.auth.v3.Authorization");
    expect(services.map((s) => s.typeName)).toContain("keygate.v1.FactorService");
    expect(unary.length).toBeGreaterThanOrEqual(50);
  });

  it("random JSON bodies answer a deliberate code, never internal or unknown", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...unary),
        fc.oneof(fc.json({ maxDepth: 3 }), fc.string({ maxLength: 200 })),
        caller,
        async ({ service, method }, body, headers) => {
          const res = await post(
            `${service.typeName}/${method.name}`,
            "application/json",
            body,
            headers,
          );
          expect(forbidden, `${method.name} ${body}`).not.toContain(res.code);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("random binary bodies answer a deliberate code; bytes that do not decode are invalid_argument", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...unary),
        fc.uint8Array({ maxLength: 512 }),
        caller,
        async ({ service, method }, body, headers) => {
          const res = await post(
            `${service.typeName}/${method.name}`,
            "application/proto",
            body,
            headers,
          );
          expect(forbidden).not.toContain(res.code);
          let decodes = true;
          try {
            fromBinary(method.input, body);
          } catch {
            decodes = false;
          }
          // connect-es answers these internal; the patch in patches/ makes them the client's.
          if (!decodes) expect(res.code).toBe("invalid_argument");
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a binary message nested past the decoder's depth is INVALID_ARGUMENT over Connect, gRPC and gRPC-Web", async () => {
    // UpdateUserMetadata with a google.protobuf.Struct nested 4,000 levels (56 KB), built by
    // hand: the encoder itself would run out of stack.
    const varint = (n: number) => {
      const out: number[] = [];
      for (; n > 127; n >>>= 7) out.push((n & 127) | 128);
      out.push(n);
      return Buffer.from(out);
    };
    const field = (number: number, payload: Buffer) =>
      Buffer.concat([varint((number << 3) | 2), varint(payload.length), payload]);
    const entry = (value: Buffer) =>
      field(1, Buffer.concat([field(1, Buffer.from("a")), field(2, value)]));
    let value = field(3, Buffer.from("x"));
    for (let i = 0; i < 4000; i++) value = field(5, entry(value));
    const message = Buffer.concat([
      field(1, Buffer.from(crypto.randomUUID())),
      field(2, entry(value)),
    ]);
    const envelope = Buffer.concat([Buffer.from([0]), Buffer.alloc(4), message]);
    envelope.writeUInt32BE(message.length, 1);
    const path = "/keygate.v1.AdminService/UpdateUserMetadata";
    const big = await startTestKeygate();
    const auth = { authorization: `Bearer ${big.bootstrapped?.adminKey}` };
    try {
      const connect = await fetch(`${big.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/proto", ...auth },
        body: message,
      });
      expect(connect.status).toBe(400);
      expect(((await connect.json()) as { code: string }).code).toBe("invalid_argument");

      const web = await fetch(`${big.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/grpc-web+proto", ...auth },
        body: envelope,
      });
      const trailers = Buffer.from(await web.arrayBuffer()).toString("latin1");
      expect(`${web.headers.get("grpc-status") ?? ""}${trailers}`).toMatch(/grpc-status:? ?3\b/);

      const status = await grpcStatusOf(big.url, path, auth, envelope);
      expect(status).toBe("3");
    } finally {
      await big.stop();
    }
  });

  it("bytes that do not decompress, or a compressed frame with no encoding, are INVALID_ARGUMENT", async () => {
    const garbage = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const path = "keygate.v1.AuthService/Login";
    for (const encoding of ["br", "gzip"]) {
      const connect = await post(path, "application/json", garbage, {
        "content-encoding": encoding,
      });
      expect(connect, encoding).toEqual({ status: 400, code: "invalid_argument" });
    }
    const grpcStatus = (headers: Record<string, string>, flag: number) =>
      grpcStatusOf(
        keygate.url,
        `/${path}`,
        headers,
        Buffer.concat([Buffer.from([flag, 0, 0, 0, garbage.length]), garbage]),
      );
    expect(await grpcStatus({ "grpc-encoding": "br" }, 1)).toBe("3");
    expect(await grpcStatus({ "grpc-encoding": "gzip" }, 1)).toBe("3");
    expect(await grpcStatus({}, 1)).toBe("3");
  });

  it("an oversized message is RESOURCE_EXHAUSTED on every RPC, over JSON and binary", async () => {
    for (const { service, method } of unary) {
      const path = `${service.typeName}/${method.name}`;
      const json = JSON.stringify({ padding: "x".repeat(maxRequestBytes * 2) });
      const binary = new Uint8Array(maxRequestBytes * 2).fill(0x0a);
      expect((await post(path, "application/json", json)).code, path).toBe("resource_exhausted");
      expect((await post(path, "application/proto", binary)).code, path).toBe("resource_exhausted");
    }
  });

  it("a stream message over the limit says REQUEST_TOO_LARGE, not RATE_LIMITED (a retry cannot help)", async () => {
    // A Connect streaming request whose one envelope declares 4 GiB.
    const res = await fetch(`${keygate.url}/grpc.health.v1.Health/Watch`, {
      method: "POST",
      headers: { "content-type": "application/connect+json" },
      body: Buffer.from([0, 0xff, 0xff, 0xff, 0xff]),
    });
    const body = Buffer.from(await res.arrayBuffer());
    // The end-of-stream envelope (flag 2) carries the error.
    expect(body[0]).toBe(2);
    const end = JSON.parse(body.subarray(5).toString()) as {
      error: { code: string; details: { type: string; value: string }[] };
    };
    expect(end.error.code).toBe("resource_exhausted");
    const info = end.error.details.find((d) => d.type === "google.rpc.ErrorInfo");
    expect(info).toBeDefined();
    const reason = fromBinary(ErrorInfoSchema, Buffer.from(info?.value ?? "", "base64")).reason;
    expect(reason).toBe("REQUEST_TOO_LARGE");
  });

  it("real clients with random field values get a deliberate code, over Connect and gRPC", async () => {
    const transports = [
      createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
      createGrpcTransport({ baseUrl: keygate.url }),
    ];
    const byMethod = unary.map(({ service, method }) =>
      messageArb(method.input).map((message) => ({ service, method, message })),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(...byMethod),
        caller,
        fc.constantFrom(0, 1),
        async ({ service, method, message }, headers, t) => {
          const client = createClient(service, transports[t] as (typeof transports)[0]) as Record<
            string,
            (m: unknown, o: unknown) => Promise<unknown>
          >;
          const call = client[method.localName] as (m: unknown, o: unknown) => Promise<unknown>;
          const outcome = await call(message, { headers }).then(
            () => Code[0],
            (e) => Code[ConnectError.from(e).code],
          );
          expect(["Internal", "Unknown"], `${method.name}`).not.toContain(outcome);
        },
      ),
      { numRuns: 400 },
    );
  });

  it("U+0000 in any string field is INVALID_ARGUMENT naming the field, on every RPC", async () => {
    const client = (service: DescService) =>
      createClient(
        service,
        createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
      ) as unknown as Record<string, (m: unknown, o: unknown) => Promise<unknown>>;
    const refusal = async (service: DescService, method: string, message: unknown) => {
      const call = client(service)[method] as (m: unknown, o: unknown) => Promise<unknown>;
      const error = await call(message, {
        headers: { authorization: `Bearer ${rootKey}` },
        timeoutMs: 5_000,
      }).then(
        () => undefined,
        (e) => ConnectError.from(e),
      );
      return {
        code: error ? Code[error.code] : "ok",
        fields: error?.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field),
      };
    };
    let tried = 0;
    for (const { service, method } of methods) {
      for (const field of method.input.fields) {
        if (field.oneof || field.fieldKind !== "scalar" || field.scalar !== ScalarType.STRING)
          continue;
        tried++;
        const message = { [field.localName]: "a\u0000b" };
        if (method.methodKind === "server_streaming") {
          type Stream = (m: unknown, o: unknown) => AsyncIterable<unknown>;
          const stream = (client(service)[method.localName] as unknown as Stream)(message, {
            headers: { authorization: `Bearer ${rootKey}` },
            timeoutMs: 5_000,
          });
          const code = await (async () => {
            for await (const _ of stream) return "message";
            return "ended";
          })().catch((e) => Code[ConnectError.from(e).code]);
          expect(code, `${method.name}.${field.name}`).toBe("InvalidArgument");
          continue;
        }
        expect(
          await refusal(service, method.localName, message),
          `${method.name}.${field.name}`,
        ).toEqual({ code: "InvalidArgument", fields: [field.name] });
      }
    }
    expect(tried).toBeGreaterThan(40);
    // Nested: a list element, and a map value deep in Envoy's CheckRequest.
    expect(await refusal(AdminService, "listAuditEvents", { types: ["login", "\u0000"] })).toEqual({
      code: "InvalidArgument",
      fields: ["types[1]"],
    });
    expect(
      await refusal(Authorization, "check", {
        attributes: { request: { http: { headers: { "x-name": "a\u0000" } } } },
      }),
    ).toEqual({
      code: "InvalidArgument",
      fields: ['attributes.request.http.headers["x-name"]'],
    });
  });

  it("addresses outside the one mailbox grammar are INVALID_ARGUMENT naming email, in SignUp and AddMember", async () => {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const auth = createClient(AuthService, transport);
    const admin = createClient(AdminService, transport);
    const workspaceId = keygate.bootstrapped?.workspaceId as string;
    const refusal = (call: Promise<unknown>) =>
      call.then(
        () => ({ code: "ok", fields: [] as string[] }),
        (e) => {
          const error = ConnectError.from(e);
          return {
            code: Code[error.code],
            fields: error.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field),
          };
        },
      );
    const odd = [
      "a,b@x.example",
      "a;b@x.example",
      "a<b@x.example",
      "a>b@x.example",
      '"q"@x.example',
      "a(b)@x.example",
      "a\\b@x.example",
      "a:b@x.example",
      "a[b]@x.example",
      "a b@x.example",
      "a@b@x.example",
      "a..b@x.example",
      ".a@x.example",
      "a@x..example",
      "a@-x.example",
      "a@[127.0.0.1]",
      "a@x.example,b@y.example",
      "Ada <ada@x.example>",
      "a\u202e@x.example",
      "a@x.example\r\nBcc: b@y.example",
      `${"a".repeat(65)}@x.example`,
    ];
    for (const email of odd) {
      expect(
        await refusal(
          auth.signUp(
            { email, password: "correct horse battery staple" },
            {
              headers: { "x-workspace-id": workspaceId },
            },
          ),
        ),
        `SignUp ${email}`,
      ).toEqual({ code: "InvalidArgument", fields: ["email"] });
      expect(
        await refusal(
          admin.addMember(
            { workspaceId, email, role: 3 },
            { headers: { authorization: `Bearer ${rootKey}` } },
          ),
        ),
        `AddMember ${email}`,
      ).toEqual({ code: "InvalidArgument", fields: ["email"] });
    }
    // What the grammar keeps: tags, apostrophes, other atext, internationalised addresses.
    for (const email of [
      `ada+tag-${Date.now()}@example.test`,
      `o'brien.${Date.now()}@mail.example.test`,
      `j\u00f6rg-${Date.now()}@b\u00fccher.example`,
      `x!#$%&*=?^_{|}~-${Date.now()}@example.test`,
    ]) {
      expect(
        await refusal(
          admin.addMember(
            { workspaceId, email, role: 3 },
            { headers: { authorization: `Bearer ${rootKey}` } },
          ),
        ),
        `AddMember ${email}`,
      ).toEqual({ code: "ok", fields: [] });
    }
  });

  it("server-streaming RPCs refuse random requests deliberately or stream until cancelled", async () => {
    const streaming = methods.filter((m) => m.method.methodKind === "server_streaming");
    expect(streaming.length).toBeGreaterThan(0);
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          ...streaming.map(({ service, method }) =>
            messageArb(method.input).map((message) => ({ service, method, message })),
          ),
        ),
        caller,
        async ({ service, method, message }, headers) => {
          type Stream = (m: unknown, o: unknown) => AsyncIterable<unknown>;
          const client = createClient(service, transport) as unknown as Record<string, Stream>;
          const stream = (client[method.localName] as Stream)(message, {
            headers,
            timeoutMs: 300,
          });
          const outcome = await (async () => {
            for await (const _ of stream) return "message";
            return "ended";
          })().catch((e) => Code[ConnectError.from(e).code]);
          expect(["Internal", "Unknown"], method.name).not.toContain(outcome);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("a Host no URL can be built with is INVALID_ARGUMENT on every path, never a crash", async () => {
    const { port } = new URL(keygate.url);
    /** One raw HTTP/1.x request; answers the status line and the body. */
    const raw = (head: string) =>
      new Promise<{ status: string; body: string }>((resolve, reject) => {
        const socket = net.connect(Number(port), "127.0.0.1", () => socket.end(head));
        let text = "";
        socket.on("data", (chunk) => {
          text += chunk;
        });
        socket.on("error", reject);
        socket.on("close", () => {
          const [status = "", ...rest] = text.split("\r\n");
          resolve({ status, body: rest.join("\r\n").split("\r\n\r\n")[1] ?? "" });
        });
      });
    const paths = [
      "/keygate.v1.TokenIntrospectionService/Introspect", // the lean lane's
      "/keygate.v1.AuthService/Login", // connect-node's
    ];
    for (const path of paths) {
      for (const [version, host] of [
        ["HTTP/1.1", "Host: a b\r\n"],
        ["HTTP/1.1", "Host: example.com:99999\r\n"],
        ["HTTP/1.0", ""],
      ] as const) {
        const answer = await raw(
          `POST ${path} ${version}\r\n${host}content-type: application/json\r\n` +
            "content-length: 2\r\nconnection: close\r\n\r\n{}",
        );
        expect(answer.status, `${version} ${host.trim()} ${path}`).toMatch(/ 400 /);
        expect(JSON.parse(answer.body)).toMatchObject({ code: "invalid_argument" });
      }
    }
  });

  it("takes HTTP/1.1 request targets in absolute form (RFC 9112, 3.2.2)", async () => {
    const { port } = new URL(keygate.url);
    // Written without a FIN: the answer comes after the call, and `connection: close` ends it.
    const send = (head: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = net.connect(Number(port), "127.0.0.1", () => socket.write(head));
        let text = "";
        socket.on("data", (chunk) => {
          text += chunk;
        });
        socket.on("error", reject);
        socket.on("close", () => resolve(text));
      });
    const health = await send(
      "POST http://x.example/grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x.example\r\n" +
        "content-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    );
    expect(health).toMatch(/^HTTP\/1.1 200 /);
    expect(health).toContain('"status":"SERVING"');
    const healthz = await send(
      "GET http://x.example/healthz?probe=1 HTTP/1.1\r\nHost: x.example\r\nconnection: close\r\n\r\n",
    );
    expect(healthz).toMatch(/^HTTP\/1.1 200 /);
  });

  it("the server is still up and ready after all of it", async () => {
    expect((await fetch(`${keygate.url}/readyz`)).status).toBe(200);
    const health = createClient(Health, createGrpcTransport({ baseUrl: keygate.url }));
    expect((await health.check({})).status).toBe(1);
  });
});
