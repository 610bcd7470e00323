import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { createConnectTransport as createWebConnectTransport } from "@connectrpc/connect-web";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

let keygate: TestKeygate;

beforeAll(async () => {
  keygate = await startTestKeygate({ KEYGATE_CORS_ORIGINS: "https://app.example.test" });
});
afterAll(async () => {
  await keygate?.stop();
});

const transports = {
  "Connect over HTTP/1.1": () =>
    createConnectTransport({ baseUrl: keygate.url, httpVersion: "1.1" }),
  "Connect over HTTP/2": () => createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" }),
  "Connect binary over HTTP/2": () =>
    createConnectTransport({ baseUrl: keygate.url, httpVersion: "2", useBinaryFormat: true }),
  "gRPC over h2c": () => createGrpcTransport({ baseUrl: keygate.url }),
  "gRPC-Web over HTTP/1.1": () =>
    createGrpcWebTransport({ baseUrl: keygate.url, httpVersion: "1.1" }),
  "gRPC-Web over HTTP/2": () => createGrpcWebTransport({ baseUrl: keygate.url, httpVersion: "2" }),
  "connect-web over fetch": () => createWebConnectTransport({ baseUrl: keygate.url }),
};

describe.each(Object.entries(transports))("%s", (_name, transport) => {
  it("answers the health check as SERVING", async () => {
    const health = createClient(Health, transport());
    const res = await health.check({ service: "" });
    expect(res.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });

  it("serves the JWKS through GetJwks, as at /.well-known/jwks.json", async () => {
    const introspection = createClient(TokenIntrospectionService, transport());
    const res = await introspection.getJwks({});
    const keys = (res.jwks as { keys: { kid: string; d?: string }[] }).keys;
    expect(keys.length).toBeGreaterThan(0);
    expect(keys[0]?.kid).toBeTruthy();
    expect(keys.some((k) => "d" in k)).toBe(false);
    const http = (await (await fetch(`${keygate.url}/.well-known/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    expect(http.keys.map((k) => k.kid)).toEqual(keys.map((k) => k.kid));
  });

  it("carries errors with their code and reason", async () => {
    const auth = createClient(AuthService, transport());
    const error = await auth
      .login({
        email: "nobody@example.test",
        password: "not the password",
        workspaceSlug: "default",
      })
      .catch((e) => e);
    expect(error).toBeInstanceOf(ConnectError);
    const ce = error as ConnectError;
    expect(ce.code).toBe(Code.Unauthenticated);
    expect(ce.findDetails(ErrorInfoSchema)[0]?.reason).toBe("INVALID_CREDENTIALS");
  });
});

describe("stock @grpc/grpc-js with proto-loader", () => {
  const protoRoot = path.resolve(import.meta.dirname, "../proto");
  const definition = protoLoader.loadSync(
    ["grpc/health/v1/health.proto", "keygate/v1/auth_service.proto"],
    { includeDirs: [protoRoot], keepCase: false, defaults: true, enums: String },
  );
  // biome-ignore lint/suspicious/noExplicitAny: proto-loader builds the client classes at run time.
  const loaded = grpc.loadPackageDefinition(definition) as any;
  // biome-ignore lint/suspicious/noExplicitAny: methods are generated at run time.
  let health: any;
  // biome-ignore lint/suspicious/noExplicitAny: methods are generated at run time.
  let auth: any;

  beforeAll(() => {
    const target = new URL(keygate.url).host;
    health = new loaded.grpc.health.v1.Health(target, grpc.credentials.createInsecure());
    auth = new loaded.keygate.v1.AuthService(target, grpc.credentials.createInsecure());
  });
  afterAll(() => {
    health?.close();
    auth?.close();
  });

  it("Health/Check answers SERVING", async () => {
    const res = await new Promise<{ status: string }>((resolve, reject) =>
      health.Check({ service: "" }, (err: Error | null, r: { status: string }) =>
        err ? reject(err) : resolve(r),
      ),
    );
    expect(res.status).toBe("SERVING");
  });

  it("Health/Check of an unknown service answers NOT_FOUND", async () => {
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      health.Check({ service: "no.such.Service" }, (e: grpc.ServiceError) => resolve(e)),
    );
    expect(err.code).toBe(grpc.status.NOT_FOUND);
  });

  it("Health/Watch streams SERVING first", async () => {
    const call = health.Watch({ service: "keygate.v1.AuthService" }) as grpc.ClientReadableStream<{
      status: string;
    }>;
    const first = await new Promise<{ status: string }>((resolve, reject) => {
      call.once("data", resolve);
      call.once("error", reject);
    });
    call.cancel();
    expect(first.status).toBe("SERVING");
  });

  it("AuthService/Login answers UNAUTHENTICATED with the request id in the metadata", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-request-id", "smoke-grpc-1");
    const { err, headers } = await new Promise<{ err: grpc.ServiceError; headers: grpc.Metadata }>(
      (resolve) => {
        let headers = new grpc.Metadata();
        const call = auth.Login(
          { email: "nobody@example.test", password: "not the password", workspaceSlug: "default" },
          metadata,
          (e: grpc.ServiceError) => resolve({ err: e, headers }),
        ) as grpc.ClientUnaryCall;
        call.on("metadata", (m: grpc.Metadata) => {
          headers = m;
        });
      },
    );
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(headers.get("x-request-id")).toEqual(["smoke-grpc-1"]);
  });
});

describe("plain HTTP/1.1, as curl sends it", () => {
  it("Connect JSON POST answers the health check", async () => {
    const res = await fetch(`${keygate.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "SERVING" });
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("echoes a well-formed x-request-id and replaces a malformed one", async () => {
    const given = await fetch(`${keygate.url}/healthz`, { headers: { "x-request-id": "req-123" } });
    expect(given.headers.get("x-request-id")).toBe("req-123");
    const bad = await fetch(`${keygate.url}/healthz`, { headers: { "x-request-id": "a b c" } });
    expect(bad.headers.get("x-request-id")).not.toBe("a b c");
  });

  it("an error answers its HTTP status with code and reason in JSON", async () => {
    const res = await fetch(`${keygate.url}/keygate.v1.AuthService/Login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        email: "nobody@example.test",
        password: "not the password",
        workspaceSlug: "default",
      }),
    });
    expect(res.status).toBe(401);
    const body = (await res.json()) as {
      code: string;
      details: { type: string; debug: { reason: string } }[];
    };
    expect(body.code).toBe("unauthenticated");
    expect(body.details[0]?.type).toBe("google.rpc.ErrorInfo");
    expect(body.details[0]?.debug.reason).toBe("INVALID_CREDENTIALS");
  });

  it("malformed JSON is INVALID_ARGUMENT, never INTERNAL", async () => {
    const res = await fetch(`${keygate.url}/keygate.v1.AuthService/Login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe("invalid_argument");
  });

  it("a body over the size limit is refused with RESOURCE_EXHAUSTED", async () => {
    const res = await fetch(`${keygate.url}/keygate.v1.AuthService/Login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        email: "a@example.test",
        password: "x".repeat(keygate.config.maxRequestBytes),
      }),
    });
    expect(((await res.json()) as { code: string }).code).toBe("resource_exhausted");
  });

  it("serves /healthz, /readyz and the JWKS", async () => {
    const healthz = await fetch(`${keygate.url}/healthz`);
    expect(healthz.status).toBe(200);
    const readyz = await fetch(`${keygate.url}/readyz`);
    expect(readyz.status).toBe(200);
    expect(await readyz.json()).toEqual({ status: "ready" });
    const jwks = await fetch(`${keygate.url}/.well-known/jwks.json`);
    expect(jwks.status).toBe(200);
    expect(jwks.headers.get("content-type")).toBe("application/json");
    expect(Array.isArray(((await jwks.json()) as { keys: unknown }).keys)).toBe(true);
    const unknown = await fetch(`${keygate.url}/nothing-here`);
    expect(unknown.status).toBe(404);
  });

  it("answers CORS preflights for configured origins only", async () => {
    const preflight = (origin: string) =>
      fetch(`${keygate.url}/keygate.v1.AuthService/Login`, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers":
            "content-type,connect-protocol-version,x-workspace-id,authorization",
        },
      });
    const allowed = await preflight("https://app.example.test");
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get("access-control-allow-origin")).toBe("https://app.example.test");
    expect(allowed.headers.get("access-control-allow-headers")?.toLowerCase()).toContain(
      "x-workspace-id",
    );
    const other = await preflight("https://evil.example.test");
    expect(other.headers.get("access-control-allow-origin")).toBeNull();

    const call = await fetch(`${keygate.url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: "https://app.example.test" },
      body: "{}",
    });
    expect(call.headers.get("access-control-expose-headers")?.toLowerCase()).toContain(
      "grpc-status",
    );
  });
});

describe("deadlines", () => {
  it("a call past its deadline ends with DEADLINE_EXCEEDED", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: keygate.url }));
    const received: number[] = [];
    const error = await (async () => {
      for await (const res of health.watch({ service: "" }, { timeoutMs: 300 }))
        received.push(res.status);
    })().catch((e) => e);
    expect(received).toEqual([HealthCheckResponse_ServingStatus.SERVING]);
    expect(ConnectError.from(error).code).toBe(Code.DeadlineExceeded);
  });
});
