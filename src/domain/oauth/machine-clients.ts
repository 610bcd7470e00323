import type { OAuthClientRow } from "../../repositories/oauth-clients.js";
import type { Violations } from "../validate.js";
import { parseClientJwks } from "./client-assertion.js";
import { supportedScopes } from "./scopes.js";

/**
 * What CreateOAuthClient decides beyond redirect URIs: the grant types, the one token endpoint
 * authentication method, the keys of a private_key_jwt client and the scopes that go with the
 * grant types (docs/openid-provider.md, "Machine clients").
 */

export type GrantType = OAuthClientRow["grant_types"][number];
export type TokenEndpointAuthMethod = OAuthClientRow["token_endpoint_auth_method"];

export const grantTypes: readonly GrantType[] = [
  "authorization_code",
  "refresh_token",
  "client_credentials",
];
export const tokenEndpointAuthMethods: readonly TokenEndpointAuthMethod[] = [
  "client_secret_basic",
  "client_secret_post",
  "private_key_jwt",
  "none",
];
const defaultGrantTypes: readonly GrantType[] = ["authorization_code", "refresh_token"];
const maxScopes = 50;
/** RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const scopeToken = /^[\x21\x23-\x5B\x5D-\x7E]{1,100}$/;

/** Scopes about a user (they mean something only in a grant a user made). */
export function isUserScope(scope: string): boolean {
  return supportedScopes.includes(scope);
}

export interface MachineRegistration {
  readonly grantTypes: readonly GrantType[];
  readonly method: TokenEndpointAuthMethod;
  readonly jwks: { keys: Record<string, string>[] } | null;
  readonly scopes: readonly string[];
  /** Whether the client gets a secret (client_secret_basic, client_secret_post). */
  readonly hasSecret: boolean;
}

/**
 * The grant types, method, keys and scopes of a new client, every problem added to `v`:
 * - grant types of authorization_code, refresh_token (only beside authorization_code) and
 *   client_credentials (not for a public client); a client without authorization_code has no
 *   redirect URIs, logout URIs nor back-channel logout, since no user ever comes through it;
 * - a public client authenticates with none, a confidential one with exactly one of
 *   client_secret_basic (the default), client_secret_post and private_key_jwt (with keys);
 * - openid, profile, email and offline_access only with authorization_code; other scopes
 *   (an API's, like `orders.read`) only with client_credentials.
 */
export async function machineRegistration(
  v: Violations,
  input: {
    readonly confidential: boolean;
    readonly grantTypes?: readonly string[];
    readonly tokenEndpointAuthMethod?: string;
    readonly jwks?: string;
    readonly scopes: readonly string[];
    readonly redirectUris: readonly string[];
    readonly postLogoutRedirectUris: readonly string[];
    readonly backchannelLogoutUri: string;
  },
): Promise<MachineRegistration> {
  const asked = [...new Set(input.grantTypes ?? [])];
  asked.forEach((grantType, i) => {
    if (!(grantTypes as readonly string[]).includes(grantType)) {
      v.add(`grant_types[${i}]`, `must be one of ${grantTypes.join(", ")}`);
    }
  });
  const granted = asked.length === 0 ? defaultGrantTypes : (asked as GrantType[]);
  const userFlow = granted.includes("authorization_code");
  const machineFlow = granted.includes("client_credentials");
  if (granted.includes("refresh_token") && !userFlow) {
    v.add("grant_types", "refresh_token needs authorization_code");
  }
  if (!userFlow) {
    if (input.redirectUris.length > 0) v.add("redirect_uris", "needs authorization_code");
    if (input.postLogoutRedirectUris.length > 0) {
      v.add("post_logout_redirect_uris", "needs authorization_code");
    }
    if (input.backchannelLogoutUri !== "") {
      v.add("backchannel_logout_uri", "needs authorization_code");
    }
  }

  const given = input.tokenEndpointAuthMethod ?? "";
  let method: TokenEndpointAuthMethod = input.confidential ? "client_secret_basic" : "none";
  if (given !== "") {
    if (!(tokenEndpointAuthMethods as readonly string[]).includes(given)) {
      v.add("token_endpoint_auth_method", `must be one of ${tokenEndpointAuthMethods.join(", ")}`);
    } else if ((given === "none") === input.confidential) {
      v.add(
        "token_endpoint_auth_method",
        input.confidential
          ? "a confidential client authenticates (none is for public clients)"
          : "a public client has no credentials: none, or make it confidential",
      );
    } else {
      method = given as TokenEndpointAuthMethod;
    }
  }
  if (machineFlow && !input.confidential) {
    v.add("grant_types", "client_credentials is for confidential clients only");
  }

  let jwks: MachineRegistration["jwks"] = null;
  const jwksText = input.jwks ?? "";
  if (method === "private_key_jwt") {
    if (jwksText === "") v.add("jwks", "private_key_jwt needs the client's public keys");
    else {
      const parsed = await parseClientJwks(jwksText);
      if ("problem" in parsed) v.add("jwks", parsed.problem);
      else jwks = parsed.jwks;
    }
  } else if (jwksText !== "") {
    v.add("jwks", "is only for private_key_jwt");
  }

  if (input.scopes.length > maxScopes) v.add("scopes", `takes at most ${maxScopes} scopes`);
  input.scopes.slice(0, maxScopes).forEach((scope, i) => {
    if (isUserScope(scope)) {
      if (!userFlow) v.add(`scopes[${i}]`, "is a user's scope: it needs authorization_code");
    } else if (!scopeToken.test(scope)) {
      v.add(`scopes[${i}]`, "is not a scope (RFC 6749 section 3.3), or longer than 100 characters");
    } else if (!machineFlow) {
      v.add(
        `scopes[${i}]`,
        `must be one of ${supportedScopes.join(", ")} (other scopes need client_credentials)`,
      );
    }
  });
  const scopes =
    input.scopes.length === 0 ? (userFlow ? supportedScopes : []) : [...new Set(input.scopes)];
  return {
    grantTypes: granted,
    method,
    jwks,
    scopes,
    hasSecret: method === "client_secret_basic" || method === "client_secret_post",
  };
}
