import { randomBytes } from "node:crypto";
import { newOpaqueToken, opaqueHash } from "../../crypto/opaque-tokens.js";
import { withTenant } from "../../db/with-tenant.js";
import { lockWorkspace } from "../../repositories/admin-workspaces.js";
import {
  countDynamicOAuthClients,
  insertOAuthClient,
  type OAuthClientRow,
} from "../../repositories/oauth-clients.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import { audit } from "../audit.js";
import type { RequestMeta } from "../deps.js";
import { effectiveSettings } from "../settings.js";
import { isDisplayName, isUuid } from "../validate.js";
import type { ProviderDeps } from "./authorize.js";
import { redirectUriProblem } from "./clients.js";
import { OAuthProtocolError } from "./errors.js";
import { parseScope, supportedScopes } from "./scopes.js";

/**
 * RFC 7591 dynamic client registration at /w/<workspace>/oauth2/register, for workspaces that
 * allow it (the oauth_dynamic_registration flag): how an MCP client, or any app the workspace
 * does not know in advance, gets a client id. Such a client is third-party by construction:
 * it never skips consent, and the consent screen says the workspace has not vouched for it.
 * It gets no back-channel logout URI and no post-logout redirect URIs: nothing that makes
 * Keygate call or send people to an address no admin has seen.
 */

/** Self-registered clients a workspace holds at most: each is a row anyone could make. */
export const maxDynamicClients = 1000;

const authMethods = ["none", "client_secret_basic", "client_secret_post"] as const;
const grantTypes = new Set(["authorization_code", "refresh_token"]);
const maxRedirectUris = 10;

const invalidMetadata = (description: string) =>
  new OAuthProtocolError("invalid_client_metadata", description);

/** The metadata a client sent, checked (RFC 7591 section 2): what it may register. */
function parseMetadata(body: unknown) {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidMetadata("send the client metadata as a JSON object");
  }
  const m = body as Record<string, unknown>;
  const strings = (name: string, fallback: readonly string[]): string[] => {
    const value = m[name];
    if (value === undefined) return [...fallback];
    if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
      throw invalidMetadata(`${name} must be an array of strings`);
    }
    return [...new Set(value as string[])];
  };
  const text = (name: string, max: number): string | undefined => {
    const value = m[name];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || value.length > max) {
      throw invalidMetadata(`${name} must be a string of at most ${max} characters`);
    }
    return value;
  };

  const redirectUris = strings("redirect_uris", []);
  if (redirectUris.length === 0 || redirectUris.length > maxRedirectUris) {
    throw new OAuthProtocolError(
      "invalid_redirect_uri",
      `redirect_uris needs 1 to ${maxRedirectUris} URIs`,
    );
  }
  for (const uri of redirectUris) {
    const problem = redirectUriProblem(uri);
    if (problem !== null) {
      throw new OAuthProtocolError("invalid_redirect_uri", `redirect URI ${uri} ${problem}`);
    }
  }
  // RFC 7591 section 2: client_secret_basic when the client names no method.
  const method = text("token_endpoint_auth_method", 50) ?? "client_secret_basic";
  if (!(authMethods as readonly string[]).includes(method)) {
    throw invalidMetadata(`token_endpoint_auth_method must be one of ${authMethods.join(", ")}`);
  }
  // RFC 7591 defaults to authorization_code alone; every grant here gets a refresh token, so
  // the client is registered for using it too (the answer says so).
  const grants = strings("grant_types", ["authorization_code", "refresh_token"]);
  const unsupported = grants.filter((g) => !grantTypes.has(g));
  if (unsupported.length > 0 || !grants.includes("authorization_code")) {
    throw invalidMetadata("grant_types may be authorization_code and refresh_token");
  }
  const responseTypes = strings("response_types", ["code"]);
  if (responseTypes.length !== 1 || responseTypes[0] !== "code") {
    throw invalidMetadata("response_types may only be code");
  }
  const scopeText = text("scope", 1000);
  const scopes = scopeText === undefined ? [...supportedScopes] : parseScope(scopeText);
  const unknownScopes = scopes.filter((s) => !supportedScopes.includes(s));
  if (unknownScopes.length > 0) {
    throw invalidMetadata(`this provider has no scope ${unknownScopes.join(" ")}`);
  }
  for (const name of ["jwks", "jwks_uri", "backchannel_logout_uri", "post_logout_redirect_uris"]) {
    if (m[name] !== undefined) {
      throw invalidMetadata(`${name} cannot be registered here: ask the workspace's admins`);
    }
  }
  const name = text("client_name", 200)?.trim();
  // The consent screen shows it: one line of printable text, as admins' client names are, so
  // nobody reorders or splits it (bidi overrides, line breaks) around the "not verified" note.
  if (name !== undefined && name !== "" && !isDisplayName(name)) {
    throw invalidMetadata("client_name must be one line of printable text");
  }
  return {
    redirectUris,
    method: method as (typeof authMethods)[number],
    grants,
    scopes,
    // A nameless client is shown by the host it sends people back to.
    name: name === undefined || name === "" ? new URL(redirectUris[0] as string).host : name,
  };
}

/** POST /w/<workspace>/oauth2/register: the registered client, its secret once, as RFC 7591 3.2.1. */
export async function registerClient(
  deps: ProviderDeps,
  meta: RequestMeta,
  workspaceId: string,
  body: unknown,
): Promise<Record<string, unknown>> {
  await deps.limiter.hit(null, [["oauth_register_ip", meta.ipAddress ?? "unknown"]]);
  const denied = new OAuthProtocolError(
    "access_denied",
    "this workspace does not allow dynamic client registration",
    403,
  );
  if (!isUuid(workspaceId)) throw denied;
  const metadata = parseMetadata(body);
  const secret = metadata.method === "none" ? null : newOpaqueToken("client_secret");
  const now = deps.clock.now();
  const client: OAuthClientRow = await withTenant(deps.pool, workspaceId, async (tx) => {
    // Locked, so that concurrent registrations are counted one after another and the cap
    // holds on every instance.
    const workspace = await lockWorkspace(tx, workspaceId);
    if (workspace === null) throw denied;
    if (!effectiveSettings(workspace, deps.settings.workspaceDefaults).oauth_dynamic_registration) {
      throw denied;
    }
    if ((await countDynamicOAuthClients(tx, workspaceId)) >= maxDynamicClients) {
      throw new OAuthProtocolError(
        "access_denied",
        "this workspace holds as many self-registered clients as it allows",
        403,
      );
    }
    const row = await insertOAuthClient(tx, {
      workspaceId,
      clientId: `kgc_${randomBytes(16).toString("base64url")}`,
      name: metadata.name,
      secretHash: secret === null ? null : opaqueHash(deps.tokenSecret, "client_secret", secret),
      redirectUris: metadata.redirectUris,
      postLogoutRedirectUris: [],
      firstParty: false,
      scopes: metadata.scopes,
      backchannelLogoutUri: null,
      registeredDynamically: true,
      grantTypes: metadata.grants as ("authorization_code" | "refresh_token")[],
      tokenEndpointAuthMethod: metadata.method,
      jwks: null,
      now,
    });
    await audit(tx, deps, meta, {
      type: "oauth_client_registered",
      workspaceId,
      outcome: "success",
      details: {
        client_id: row.client_id,
        confidential: secret !== null,
        redirect_uris: row.redirect_uris.join(" "),
      },
    });
    return row;
  });
  return {
    client_id: client.client_id,
    ...(secret === null ? {} : { client_secret: secret, client_secret_expires_at: 0 }),
    client_id_issued_at: Math.floor(client.created_at / 1000),
    client_name: client.name,
    redirect_uris: client.redirect_uris,
    token_endpoint_auth_method: metadata.method,
    grant_types: metadata.grants,
    response_types: ["code"],
    scope: client.scopes.join(" "),
  };
}

/** What discovery says of a workspace's provider; null when there is no such workspace. */
export async function providerFeatures(
  deps: Pick<ProviderDeps, "pool" | "settings">,
  workspaceId: string,
): Promise<{ readonly dynamicRegistration: boolean } | null> {
  const workspace = await findWorkspaceById(deps.pool, workspaceId);
  if (workspace === null) return null;
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  return { dynamicRegistration: settings.oauth_dynamic_registration };
}
