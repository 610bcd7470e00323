import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { decodeJwt } from "jose";
import * as client from "openid-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OAuthService } from "../gen/keygate/v1/oauth_service_pb.js";
import {
  TokenIntrospectionService,
  TokenTypeHint,
} from "../gen/keygate/v1/token_introspection_service_pb.js";
import { failure } from "./support/failure.js";
import { bearer, freePort, type Provisioner, signedIn } from "./support/fixtures.js";
import { grantThroughRpcs, relyingParty } from "./support/provider.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

/**
 * Grants as the person and the workspace's admins see and end them, on real grants: an
 * unmodified openid-client relying party, the browser played by fetch with a cookie jar, the
 * sign-in page by the RPCs it calls (as in test/openid-provider.test.ts). What revoking does
 * to the client's tokens is checked where the client uses them: the token endpoint, userinfo,
 * Introspect and the back-channel logout. test/grants.router.test.ts has the RPCs' rules.
 */

let keygate: TestKeygate;
let rootKey: string;
let workspaceId: string;
let by: Provisioner;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let oauth: ReturnType<typeof createClient<typeof OAuthService>>;
let introspection: ReturnType<typeof createClient<typeof TokenIntrospectionService>>;
const redirectUri = "http://127.0.0.1:9/callback";
let logoutReceiver: http.Server;
let logoutUri: string;
const logoutTokens: string[] = [];

beforeAll(async () => {
  logoutReceiver = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => {
      body += chunk.toString();
    });
    req.on("end", () => {
      const token = new URLSearchParams(body).get("logout_token");
      if (token) logoutTokens.push(token);
      res.end();
    });
  });
  await new Promise<void>((resolve) => logoutReceiver.listen(0, "127.0.0.1", resolve));
  logoutUri = `http://127.0.0.1:${(logoutReceiver.address() as AddressInfo).port}/backchannel`;
  const port = await freePort();
  keygate = await startTestKeygate({
    KEYGATE_PORT: String(port),
    KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
    KEYGATE_OIDC_LOGOUT_PRIVATE_NETWORKS: "true",
  });
  rootKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  oauth = createClient(OAuthService, transport);
  introspection = createClient(TokenIntrospectionService, transport);
  by = { admin, auth, adminKey: rootKey, workspaceId };
});
afterAll(async () => {
  await keygate?.stop();
  await new Promise((resolve) => logoutReceiver?.close(resolve));
});

const issuer = () => `${keygate.config.issuer}/w/${workspaceId}`;

async function registered(name: string, backchannelLogoutUri = logoutUri) {
  const res = await admin.createOAuthClient(
    {
      workspaceId,
      name,
      redirectUris: [redirectUri],
      confidential: true,
      firstParty: true,
      backchannelLogoutUri,
    },
    bearer(rootKey),
  );
  const clientId = res.client?.clientId as string;
  return { clientId, config: await relyingParty(issuer(), clientId, res.clientSecret) };
}

/** Authorize, accept with the person's Keygate token, come back, exchange the code. */
const grant = (config: client.Configuration, accessToken: string) =>
  grantThroughRpcs(oauth, config, { redirectUri, accessToken });

async function served(accessToken: string) {
  const res = await fetch(`${issuer()}/oauth2/userinfo`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  return res.status === 200;
}

async function refreshRefused(config: client.Configuration, refreshToken: string) {
  const refused = await client.refreshTokenGrant(config, refreshToken).catch((e: unknown) => e);
  return (refused as client.ResponseBodyError).error === "invalid_grant";
}

describe("grants of a real OpenID Provider client", () => {
  it("are listed for their user, and ListSessions names the grant's client", async () => {
    const person = await signedIn(by, "grant-list");
    const { clientId, config } = await registered("Calendar");
    const tokens = await grant(config, person.accessToken);
    const { grants } = await auth.listGrants({}, bearer(person.accessToken));
    expect(grants).toHaveLength(1);
    expect(grants[0]).toMatchObject({
      clientId,
      clientName: "Calendar",
      userId: person.userId,
      workspaceId,
      scopes: ["email", "openid"],
      sessionCount: 1,
    });
    const { sessions } = await auth.listSessions({}, bearer(person.accessToken));
    const sid = decodeJwt(tokens.access_token).sid;
    expect(sessions.find((s) => s.id === sid)?.clientId).toBe(clientId);
    expect(sessions.find((s) => s.id === person.sessionId)?.clientId).toBe("");
    const listed = await admin.listGrants({ workspaceId, clientId }, bearer(rootKey));
    expect(listed.grants.map((g) => g.userId)).toEqual([person.userId]);
  });

  it("SECURITY.md 45: a client's own token neither lists nor revokes grants", async () => {
    const person = await signedIn(by, "grant-client-token");
    const { clientId, config } = await registered("Notes");
    const tokens = await grant(config, person.accessToken);
    expect(await failure(auth.listGrants({}, bearer(tokens.access_token)))).toMatchObject({
      code: Code.Unauthenticated,
    });
    expect(
      await failure(auth.revokeGrant({ clientId }, bearer(tokens.access_token))),
    ).toMatchObject({ code: Code.Unauthenticated });
    expect(
      await failure(admin.listGrants({ workspaceId }, bearer(tokens.access_token))),
    ).toMatchObject({ code: Code.Unauthenticated });
    // Nothing was ended by the attempts.
    expect(await served(tokens.access_token)).toBe(true);
    // Introspect answers for Keygate's own sessions only: a live grant's tokens read inactive.
    for (const [token, hint] of [
      [tokens.access_token, TokenTypeHint.ACCESS_TOKEN],
      [tokens.refresh_token as string, TokenTypeHint.REFRESH_TOKEN],
    ] as const) {
      const introspected = await introspection.introspect(
        { token, tokenTypeHint: hint },
        bearer(rootKey),
      );
      expect(introspected.active).toBe(false);
    }
  });

  it("SECURITY.md 11, 46: RevokeGrant ends the client's tokens at once and tells the client", async () => {
    const person = await signedIn(by, "grant-revoke");
    const { clientId, config } = await registered("Photos");
    const first = await grant(config, person.accessToken);
    const second = await grant(config, person.accessToken);
    const refreshed = await client.refreshTokenGrant(config, second.refresh_token as string);
    expect(await served(first.access_token)).toBe(true);

    expect((await auth.revokeGrant({ clientId }, bearer(person.accessToken))).revokedCount).toBe(2);
    for (const tokens of [first, refreshed]) {
      expect(await served(tokens.access_token)).toBe(false);
      expect(await refreshRefused(config, tokens.refresh_token as string)).toBe(true);
      const access = await introspection.introspect(
        { token: tokens.access_token },
        bearer(rootKey),
      );
      expect(access.active).toBe(false);
      const refresh = await introspection.introspect(
        { token: tokens.refresh_token as string, tokenTypeHint: TokenTypeHint.REFRESH_TOKEN },
        bearer(rootKey),
      );
      expect(refresh.active).toBe(false);
    }
    // Each ended session of the grant is owed its logout token.
    for (const tokens of [first, second]) {
      const sid = decodeJwt(tokens.access_token).sid;
      await expect
        .poll(() => logoutTokens.some((t) => decodeJwt(t).sid === sid), { timeout: 10_000 })
        .toBe(true);
    }
    // The person's own session goes on.
    expect((await auth.getSession({}, bearer(person.accessToken))).session?.id).toBe(
      person.sessionId,
    );
    expect((await auth.listGrants({}, bearer(person.accessToken))).grants).toEqual([]);
  });

  it("SECURITY.md 11: an admin's RevokeGrants ends the client's refresh token", async () => {
    const person = await signedIn(by, "grant-admin-revoke");
    const { clientId, config } = await registered("Drive");
    const other = await registered("Wiki");
    const tokens = await grant(config, person.accessToken);
    const kept = await grant(other.config, person.accessToken);
    const { revokedCount } = await admin.revokeGrants(
      { workspaceId, userId: person.userId, clientId },
      bearer(rootKey),
    );
    expect(revokedCount).toBe(1);
    expect(await refreshRefused(config, tokens.refresh_token as string)).toBe(true);
    expect(await served(tokens.access_token)).toBe(false);
    // The grant to the other client stands.
    expect(await served(kept.access_token)).toBe(true);
    expect(
      (await client.refreshTokenGrant(other.config, kept.refresh_token as string)).access_token,
    ).toBeTruthy();
  });
});

describe("back-channel logout", () => {
  it("SECURITY.md 46: a client that never answers holds two deliveries at a time, and delays no other client's", async () => {
    // A relying party that takes the logout requests and never answers them.
    let open = 0;
    let mostOpen = 0;
    const held: http.ServerResponse[] = [];
    const stuck = http.createServer((req, res) => {
      open++;
      mostOpen = Math.max(mostOpen, open);
      held.push(res);
      req.resume();
      res.on("close", () => {
        open--;
      });
    });
    await new Promise<void>((resolve) => stuck.listen(0, "127.0.0.1", resolve));
    const stuckUri = `http://127.0.0.1:${(stuck.address() as AddressInfo).port}/backchannel`;
    try {
      const person = await signedIn(by, "backchannel-fair");
      const slow = await registered("Never answers", stuckUri);
      for (let i = 0; i < 6; i++) await grant(slow.config, person.accessToken);
      const fast = await registered("Answers");
      const fastTokens = await grant(fast.config, person.accessToken);
      const fastSid = decodeJwt(fastTokens.access_token).sid;

      // Six logouts owed to the stuck client first, then one to the other.
      await admin.revokeGrants(
        { workspaceId, userId: person.userId, clientId: slow.clientId },
        bearer(rootKey),
      );
      await expect.poll(() => open, { timeout: 5_000 }).toBe(2);
      await admin.revokeGrants(
        { workspaceId, userId: person.userId, clientId: fast.clientId },
        bearer(rootKey),
      );
      await expect
        .poll(() => logoutTokens.some((t) => decodeJwt(t).sid === fastSid), { timeout: 3_000 })
        .toBe(true);
      expect(mostOpen).toBe(2);
      expect(open).toBe(2);
    } finally {
      for (const res of held) res.destroy();
      await new Promise((resolve) => stuck.close(resolve));
    }
  });
});
