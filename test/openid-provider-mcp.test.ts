import http from "node:http";
import type { AddressInfo } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type {
  OAuthClientInformationMixed,
  OAuthClientMetadata,
  OAuthTokens,
} from "@modelcontextprotocol/sdk/shared/auth.js";
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../gen/keygate/v1/auth_service_pb.js";
import { OAuthService } from "../gen/keygate/v1/oauth_service_pb.js";
import {
  createVerifier,
  type KeygateRequest,
  keygateMiddleware,
  protectedResourceMetadataHandler,
  type Verifier,
} from "../src/verify/index.js";
import { CookieBrowser } from "./support/cookie-browser.js";
import { bearer, freePort, uniqueEmail } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";

/**
 * Acceptance test 3 of the OpenID Provider: an MCP client from @modelcontextprotocol/sdk,
 * unmodified, against an MCP server that protects itself with keygate/verify. The client
 * knows only the server's URL: the 401's resource_metadata (RFC 9728) names the workspace's
 * provider, whose metadata (RFC 8414) names the registration endpoint (RFC 7591); it
 * registers, authorizes with PKCE and `resource` (RFC 8707), and calls a tool with a token
 * whose aud is that server. The browser's part is played by fetch with a cookie jar, the
 * sign-in page's by the RPCs it uses.
 */

let keygate: TestKeygate;
let rootKey: string;
let workspaceId: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let oauth: ReturnType<typeof createClient<typeof OAuthService>>;
const password = "correct horse battery staple";
const servers: { server: http.Server; verifier: Verifier }[] = [];

beforeAll(async () => {
  const port = await freePort();
  keygate = await startTestKeygate({
    KEYGATE_PORT: String(port),
    KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
  });
  rootKey = keygate.bootstrapped?.adminKey as string;
  workspaceId = keygate.bootstrapped?.workspaceId as string;
  const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
  admin = createClient(AdminService, transport);
  auth = createClient(AuthService, transport);
  oauth = createClient(OAuthService, transport);
  await admin.updateWorkspaceSettings(
    { workspaceId, settings: { oauthDynamicRegistration: true } },
    bearer(rootKey),
  );
});
afterAll(async () => {
  for (const { server, verifier } of servers) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await verifier.close();
  }
  await keygate?.stop();
});

/**
 * A sample MCP server at http://127.0.0.1:<port>/mcp with one tool, `whoami`, behind
 * keygateMiddleware with its own resource identifier; it also serves its RFC 9728 metadata.
 */
async function mcpServer(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const resource = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  const verifier = createVerifier({
    baseUrl: keygate.url,
    adminKey: rootKey,
    resource,
    workspaceId,
    issuer: keygate.config.issuer,
  });
  await verifier.ready();
  servers.push({ server, verifier });
  const metadata = protectedResourceMetadataHandler(verifier, { resourceName: "Sample tools" });
  const guard = keygateMiddleware(verifier);
  server.on("request", (req: KeygateRequest, res) => {
    metadata(req, res, () => {
      if ((req.url ?? "").split("?")[0] !== "/mcp") {
        res.statusCode = 404;
        res.end();
        return;
      }
      guard(req, res, async () => {
        const mcp = new McpServer({ name: "sample", version: "1.0.0" });
        const caller = req.keygate;
        mcp.registerTool("whoami", { description: "Who the token is for" }, async () => ({
          content: [{ type: "text", text: `${caller?.userId} via ${caller?.clientId}` }],
        }));
        // Stateless: one server and transport per request.
        const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
        res.on("close", () => {
          void transport.close();
          void mcp.close();
        });
        await mcp.connect(transport);
        await transport.handleRequest(req, res);
      });
    });
  });
  return resource;
}

/** The MCP client's OAuth state, in memory; the authorization URL it is sent to is kept. */
class MemoryProvider {
  client: OAuthClientInformationMixed | undefined;
  saved: OAuthTokens | undefined;
  verifier = "";
  authorizationUrl: URL | undefined;
  readonly redirectUrl = "http://127.0.0.1:9/mcp-callback";
  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: "Sample MCP client",
      redirect_uris: [this.redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      // offline_access and resource together (some providers break on that pairing).
      scope: "openid offline_access",
    };
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info: OAuthClientInformationMixed) {
    this.client = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens: OAuthTokens) {
    this.saved = tokens;
  }
  redirectToAuthorization(url: URL) {
    this.authorizationUrl = url;
  }
  saveCodeVerifier(verifier: string) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

/** The user's part: open the authorization URL, sign in, accept, and read the code. */
async function signInAndConsent(authorizationUrl: URL, email: string): Promise<string> {
  const browser = new CookieBrowser();
  const first = await browser.get(authorizationUrl.toString());
  expect(first.status).toBe(303);
  const requestId = new URL(first.headers.get("location") as string).searchParams.get("request");
  expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
  const { request } = await oauth.getAuthorizationRequest({ requestId: requestId as string });
  expect(request?.needsConsent).toBe(true);
  expect(request?.clientRegisteredDynamically).toBe(true);
  const login = await auth.login({ email, password, workspaceId });
  if (login.result.case !== "tokens") throw new Error("no tokens");
  const { redirectTo } = await oauth.acceptAuthorizationRequest(
    { requestId: requestId as string },
    bearer(login.result.value.accessToken),
  );
  const back = await browser.get(redirectTo);
  const callback = new URL(back.headers.get("location") as string);
  expect(callback.searchParams.get("iss")).toBe(`${keygate.config.issuer}/w/${workspaceId}`);
  return callback.searchParams.get("code") as string;
}

async function connect(url: string, provider: MemoryProvider) {
  const client = new Client({ name: "sample-client", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  await client.connect(transport);
  return { client, transport };
}

describe("an MCP client from @modelcontextprotocol/sdk", () => {
  it("discovers, registers, authorizes for the server, and calls its tool", async () => {
    const resource = await mcpServer();
    const email = uniqueEmail("mcp-user");
    const provisioned = await admin.provisionUser(
      { email, password, workspaceId, emailVerified: true },
      bearer(rootKey),
    );

    // Unauthenticated, the server says where its metadata is.
    const challenge = await fetch(resource, { method: "POST" });
    expect(challenge.status).toBe(401);
    expect(challenge.headers.get("www-authenticate")).toContain(
      `resource_metadata="${new URL(resource).origin}/.well-known/oauth-protected-resource/mcp"`,
    );

    const provider = new MemoryProvider();
    const transport = new StreamableHTTPClientTransport(new URL(resource), {
      authProvider: provider,
    });
    const first = new Client({ name: "sample-client", version: "1.0.0" });
    await expect(first.connect(transport)).rejects.toBeInstanceOf(UnauthorizedError);
    expect(provider.client?.client_id).toMatch(/^kgc_/);
    const authorizationUrl = provider.authorizationUrl as URL;
    expect(authorizationUrl.origin + authorizationUrl.pathname).toBe(
      `${keygate.config.issuer}/w/${workspaceId}/oauth2/authorize`,
    );
    expect(authorizationUrl.searchParams.get("resource")).toBe(resource);
    expect(authorizationUrl.searchParams.get("code_challenge_method")).toBe("S256");

    const code = await signInAndConsent(authorizationUrl, email);
    await transport.finishAuth(code);
    const accessToken = provider.saved?.access_token as string;
    expect(decodeJwt(accessToken).aud).toContain(resource);
    expect(provider.saved?.refresh_token).toBeTruthy();

    const { client } = await connect(resource, provider);
    const result = await client.callTool({ name: "whoami", arguments: {} });
    expect(result.content).toEqual([
      { type: "text", text: `${provisioned.user?.id} via ${provider.client?.client_id}` },
    ]);
    await client.close();

    // Another server refuses the token: it was granted for the first one alone.
    const other = await mcpServer();
    const refused = await fetch(other, {
      method: "POST",
      headers: {
        authorization: `Bearer ${accessToken}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    expect(refused.status).toBe(401);
    expect(refused.headers.get("www-authenticate")).toContain('error="invalid_token"');
  });
});
