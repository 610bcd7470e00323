import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { ManualClock } from "../src/clock.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

// Time-dependent rules with an injected clock: nothing here sleeps.
const clock = new ManualClock();
let keygate: TestKeygate;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let workspaceId: string;
const password = "correct horse battery staple";
let n = 0;

beforeAll(async () => {
  keygate = await startTestKeygate(
    {
      KEYGATE_WORKSPACE_DEFAULTS: JSON.stringify({
        access_token_ttl_seconds: 120,
        refresh_idle_timeout_seconds: 600,
        session_lifetime_seconds: 1500,
        email_verification: "off",
      }),
      KEYGATE_REFRESH_GRACE_SECONDS: "10",
    },
    { clock },
  );
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  auth = createClient(
    AuthService,
    createConnectTransport({ baseUrl: keygate.url, httpVersion: "1.1" }),
  );
});
afterAll(async () => {
  await keygate?.stop();
});

async function login() {
  const email = `clock-${++n}@example.test`;
  await auth.signUp({ email, password }, { headers: { "x-workspace-id": workspaceId } });
  const res = await auth.login({ email, password, workspaceId });
  return res.result.value as { accessToken: string; refreshToken: string };
}

async function reason(p: Promise<unknown>) {
  const e = ConnectError.from(
    await p.then(
      () => new Error("expected a failure"),
      (x) => x,
    ),
  );
  return { code: e.code, reason: e.findDetails(ErrorInfoSchema)[0]?.reason };
}

describe("SECURITY.md 12: idle timeout and absolute lifetime, enforced at refresh", () => {
  it("a session unused past its idle timeout cannot be refreshed", async () => {
    const tokens = await login();
    clock.advance(601_000);
    expect(await reason(auth.refresh({ refreshToken: tokens.refreshToken }))).toEqual({
      code: Code.Unauthenticated,
      reason: "SESSION_EXPIRED",
    });
  });

  it("refreshing keeps a session alive, but never past its absolute lifetime", async () => {
    let { refreshToken } = await login();
    for (let elapsed = 0; elapsed + 500 < 1500; elapsed += 500) {
      clock.advance(500_000);
      refreshToken = (await auth.refresh({ refreshToken })).tokens?.refreshToken as string;
    }
    clock.advance(500_000);
    expect((await reason(auth.refresh({ refreshToken }))).reason).toBe("SESSION_EXPIRED");
  });

  it("an access token is refused after its exp", async () => {
    const tokens = await login();
    const bearer = { headers: { authorization: `Bearer ${tokens.accessToken}` } };
    expect((await auth.getSession({}, bearer)).user).toBeDefined();
    clock.advance(121_000);
    expect((await reason(auth.getSession({}, bearer))).code).toBe(Code.Unauthenticated);
  });

  it("SECURITY.md 9: the grace window closes after its seconds", async () => {
    const { refreshToken } = await login();
    await auth.refresh({ refreshToken });
    clock.advance(11_000);
    expect((await reason(auth.refresh({ refreshToken }))).reason).toBe("REFRESH_TOKEN_REUSED");
  });
});
