import path from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { AdminKeyRole } from "../gen/keygate/v1/types_pb.js";
import { type Provisioner, signedIn } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { startSmtpServer } from "./support/smtp.js";

/** CheckResponse as proto-loader decodes it (enums as names, defaults filled in). */
interface HeaderOption {
  header: { key: string; value: string };
  append: { value: boolean } | null;
  appendAction: string;
}
interface CheckResponse {
  status: { code: number; message: string };
  httpResponse: "okResponse" | "deniedResponse";
  okResponse?: { headers: HeaderOption[] };
  deniedResponse?: { status: { code: string }; headers: HeaderOption[]; body: string };
}

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let rootKey: string;
let workspaceId: string;
let auth: Client<typeof AuthService>;
let byRoot: Provisioner;
let envoy: grpc.Client & {
  check(
    req: unknown,
    metadata: grpc.Metadata,
    cb: (err: grpc.ServiceError | null, res: CheckResponse) => void,
  ): void;
};

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate({ KEYGATE_SMTP_URL: smtp.url });
  rootKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  auth = createClient(AuthService, transport);
  byRoot = { admin: createClient(AdminService, transport), auth, adminKey: rootKey, workspaceId };
  // A stock grpc-js client built from the .proto files at run time, as Envoy is built from
  // its own copies of them.
  const definition = protoLoader.loadSync("envoy/service/auth/v3/external_auth.proto", {
    includeDirs: [path.resolve(import.meta.dirname, "../proto")],
    enums: String,
    defaults: true,
    oneofs: true,
  });
  // biome-ignore lint/suspicious/noExplicitAny: proto-loader builds the client classes at run time.
  const loaded = grpc.loadPackageDefinition(definition) as any;
  envoy = new loaded.envoy.service.auth.v3.Authorization(
    new URL(keygate.url).host,
    grpc.credentials.createInsecure(),
  );
});
afterAll(async () => {
  envoy?.close();
  await keygate?.stop();
  await smtp?.stop();
});

/** Metadata as Envoy's grpc_service initial_metadata sends the gateway's key. */
function keyMetadata(key = rootKey) {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${key}`);
  return m;
}

/** A CheckRequest shaped like the one Envoy's ext_authz filter sends. */
function checkRequest(headers: Record<string, string>) {
  return {
    attributes: {
      request: {
        time: { seconds: Math.floor(Date.now() / 1000), nanos: 0 },
        http: {
          id: "1234567890",
          method: "GET",
          headers: {
            ":authority": "api.example.test",
            ":method": "GET",
            ":path": "/orders?page=2",
            ":scheme": "https",
            "user-agent": "curl/8.5.0",
            "x-forwarded-proto": "https",
            "x-request-id": "2b8e1d7c-5f0a-4f55-9d3c-3f6c1a0e9b11",
            ...headers,
          },
          path: "/orders?page=2",
          host: "api.example.test",
          scheme: "https",
          protocol: "HTTP/1.1",
        },
      },
      contextExtensions: { virtual_host: "api" },
    },
  };
}

function check(req: unknown, metadata = keyMetadata()): Promise<CheckResponse> {
  return new Promise((resolve, reject) =>
    envoy.check(req, metadata, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

function headersOf(options: HeaderOption[] | undefined): Record<string, string> {
  return Object.fromEntries((options ?? []).map((o) => [o.header.key, o.header.value]));
}

describe("envoy.service.auth.v3.Authorization/Check", () => {
  it("allows an active token and sets the identity headers, overwriting the client's", async () => {
    const tokens = await signedIn(byRoot, "envoy");
    const res = await check(
      checkRequest({ authorization: `Bearer ${tokens.accessToken}`, "x-user-id": "spoofed" }),
    );
    expect(res.status.code).toBe(0);
    expect(res.httpResponse).toBe("okResponse");
    expect(headersOf(res.okResponse?.headers)).toEqual({
      "x-user-id": tokens.userId,
      "x-workspace-id": workspaceId,
      "x-session-id": tokens.sessionId,
      "x-role": "member",
      "x-amr": "pwd",
      "x-acr": "1",
    });
    for (const option of res.okResponse?.headers ?? []) {
      expect(option.appendAction).toBe("OVERWRITE_IF_EXISTS_OR_ADD");
      expect(option.append?.value).toBe(false);
    }
  });

  it("denies with 401 and WWW-Authenticate: no token, garbage, a refresh token, a revoked one", async () => {
    const tokens = await signedIn(byRoot, "envoy");
    await auth.logout({}, { headers: { authorization: `Bearer ${tokens.accessToken}` } });
    const cases: Record<string, string>[] = [
      {},
      { authorization: "Bearer garbage" },
      { authorization: "Basic dXNlcjpwYXNz" },
      { authorization: `Bearer ${tokens.refreshToken}` },
      { authorization: `Bearer ${tokens.accessToken}` },
    ];
    for (const headers of cases) {
      const res = await check(checkRequest(headers));
      expect(res.status.code).toBe(16);
      expect(res.httpResponse).toBe("deniedResponse");
      expect(res.deniedResponse?.status.code).toBe("Unauthorized");
      const denied = headersOf(res.deniedResponse?.headers);
      expect(denied["www-authenticate"]).toMatch(/^Bearer realm="keygate", error="invalid_token"/);
      expect(JSON.parse(res.deniedResponse?.body ?? "")).toMatchObject({ error: "invalid_token" });
    }
  });

  it("denies with 403 when x-workspace-id names another workspace than the token's", async () => {
    const tokens = await signedIn(byRoot, "envoy");
    const res = await check(
      checkRequest({
        authorization: `Bearer ${tokens.accessToken}`,
        "x-workspace-id": "00000000-0000-4000-8000-000000000000",
      }),
    );
    expect(res.deniedResponse?.status.code).toBe("Forbidden");
    expect(headersOf(res.deniedResponse?.headers)["www-authenticate"]).toContain(
      'error="insufficient_scope"',
    );
  });

  it("refuses a caller without an introspecting admin key as a gRPC error", async () => {
    const tokens = await signedIn(byRoot, "envoy");
    const req = checkRequest({ authorization: `Bearer ${tokens.accessToken}` });
    const none = await check(req, new grpc.Metadata()).catch((e: grpc.ServiceError) => e);
    expect((none as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const { secret } = await createClient(AdminService, transport).createAdminKey(
      { name: "no introspect", role: AdminKeyRole.READ_ONLY, introspect: false },
      { headers: { authorization: `Bearer ${rootKey}` } },
    );
    const denied = await check(req, keyMetadata(secret)).catch((e: grpc.ServiceError) => e);
    expect((denied as grpc.ServiceError).code).toBe(grpc.status.PERMISSION_DENIED);
  });
});
