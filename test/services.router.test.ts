import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { TokenIntrospectionService } from "../gen/keygate/v1/token_introspection_service_pb.js";
import { Role, type Tokens } from "../gen/keygate/v1/types_pb.js";
import { failure } from "./support/failure.js";
import { bearer, password, uniqueEmail } from "./support/fixtures.js";
import { type RouterKeygate, startRouterKeygate } from "./support/router.js";

/**
 * The services as a caller sees them, without a listener: the routes, handlers and
 * interceptors the server composes, over createRouterTransport on a database of their own.
 */
let keygate: RouterKeygate;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let workspaceId: string;
let adminKey: string;

beforeAll(async () => {
  keygate = await startRouterKeygate();
  ({ workspaceId, adminKey } = keygate.bootstrapped);
  auth = createClient(AuthService, keygate.transport);
  admin = createClient(AdminService, keygate.transport);
});
afterAll(async () => {
  await keygate?.stop();
});

/** Signs up in the default workspace (x-workspace-id) and logs in. */
async function member(tag: string): Promise<Tokens & { email: string }> {
  const email = uniqueEmail(tag);
  await auth.signUp({ email, password }, { headers: { "x-workspace-id": workspaceId } });
  const res = await auth.login({ email, password, workspaceId });
  if (res.result.case !== "tokens") throw new Error(`no tokens but ${res.result.case}`);
  return { email, ...res.result.value };
}

describe("sign-up, login and the session", () => {
  it("signs up, logs in and answers GetSession for the access token", async () => {
    const { email, accessToken, userId, sessionId } = await member("router");
    const session = await auth.getSession({}, bearer(accessToken));
    expect(session.user?.email).toBe(email);
    expect(session.user?.id).toBe(userId);
    expect(session.workspace?.id).toBe(workspaceId);
    expect(session.role).toBe(Role.MEMBER);
    expect(session.session?.id).toBe(sessionId);
  });

  it("refuses the access token of a session that logged out", async () => {
    const { accessToken } = await member("logout");
    await auth.logout({}, bearer(accessToken));
    expect(await failure(auth.getSession({}, bearer(accessToken)))).toMatchObject({
      code: Code.Unauthenticated,
    });
  });
});

describe("who may call what", () => {
  it("answers public RPCs without credentials", async () => {
    const health = await createClient(Health, keygate.transport).check({});
    expect(health.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const { jwks } = await createClient(TokenIntrospectionService, keygate.transport).getJwks({});
    // The access-token key and the ID-token key.
    expect(jwks?.keys).toEqual([
      expect.objectContaining({ kid: expect.any(String) }),
      expect.objectContaining({ kid: expect.any(String), alg: "RS256" }),
    ]);
  });

  it("refuses a signed-in RPC without a token, or with one that is not an access token", async () => {
    for (const options of [{}, bearer("garbage"), bearer(adminKey)]) {
      expect(await failure(auth.getSession({}, options))).toMatchObject({
        code: Code.Unauthenticated,
      });
    }
  });

  it("refuses an admin RPC without credentials, and a member's token as not permitted", async () => {
    expect(await failure(admin.listWorkspaces({}))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "UNAUTHENTICATED",
    });
    const { accessToken } = await member("not-admin");
    expect(await failure(admin.listWorkspaces({}, bearer(accessToken)))).toMatchObject({
      code: Code.PermissionDenied,
    });
    const page = await admin.listWorkspaces({}, bearer(adminKey));
    expect(page.workspaces.map((w) => w.id)).toContain(workspaceId);
  });
});

describe("bad input", () => {
  it("answers INVALID_ARGUMENT naming every field at fault", async () => {
    const refused = await failure(
      auth.signUp({
        email: "not an address",
        password: "",
        workspaceName: "x",
        workspaceSlug: "-No-",
      }),
    );
    expect(refused).toMatchObject({
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      fields: ["email", "password", "workspace_slug"],
    });
  });

  it("answers INVALID_ARGUMENT for a workspace header that names no workspace", async () => {
    const refused = await failure(
      auth.signUp(
        { email: uniqueEmail("no-workspace"), password },
        { headers: { "x-workspace-id": "not-a-workspace" } },
      ),
    );
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.fields).toEqual(["x-workspace-id"]);
  });
});
