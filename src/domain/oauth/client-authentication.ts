import { hashesEqual, isOpaqueToken, opaqueHash } from "../../crypto/opaque-tokens.js";
import type { OAuthClientRow } from "../../repositories/oauth-clients.js";
import type { AuthDeps, RequestMeta } from "../deps.js";
import { workspaceIssuer } from "./authorize.js";
import { verifyClientAssertion } from "./client-assertion.js";
import { OAuthProtocolError } from "./errors.js";

/** How a client authenticated at the token endpoint (RFC 6749 section 2.3, RFC 7523). */
export type PresentedCredentials =
  | {
      readonly clientId: string;
      /** Absent for a public client. */
      readonly secret: string | undefined;
      readonly method: "client_secret_basic" | "client_secret_post" | "none";
    }
  | {
      readonly clientId: string;
      readonly assertion: string;
      readonly method: "private_key_jwt";
    };

const invalidClient = (description: string) =>
  new OAuthProtocolError("invalid_client", description, 401);

/**
 * Checks the credentials against the client's one registered method (a client is refused
 * with any other: a private_key_jwt client has no secret, a client_secret_basic one does not
 * post it). `client` is null for an unknown client_id, which fails like a wrong secret.
 */
export async function checkClientCredentials(
  deps: Pick<AuthDeps, "pool" | "clock" | "tokenSecret">,
  client: OAuthClientRow | null,
  credentials: PresentedCredentials,
  issuerBase: string,
): Promise<OAuthClientRow> {
  if (client === null) throw invalidClient("client authentication failed");
  const method = client.token_endpoint_auth_method;
  if (method === "none") {
    if (credentials.method !== "none") {
      throw invalidClient("this is a public client: it has no secret to send");
    }
    return client;
  }
  if (credentials.method !== method) {
    throw invalidClient(`this client authenticates with ${method}`);
  }
  if (credentials.method === "private_key_jwt") {
    const issuer = workspaceIssuer(issuerBase, client.workspace_id);
    await verifyClientAssertion(deps, client, credentials.assertion, {
      issuer,
      tokenEndpoint: `${issuer}/oauth2/token`,
    });
    return client;
  }
  const secret = credentials.secret;
  if (
    client.secret_hash === null ||
    secret === undefined ||
    !isOpaqueToken("client_secret", secret) ||
    !hashesEqual(opaqueHash(deps.tokenSecret, "client_secret", secret), client.secret_hash)
  ) {
    throw invalidClient("client authentication failed");
  }
  return client;
}

/**
 * A failed client authentication counts against `oauth_client_auth_ip` for the caller's
 * address, across workspaces; once that is full, failures answer 429 (with the retry delay)
 * instead of 401. Successes are not counted, so a busy relying party behind one address is
 * never slowed by its own traffic.
 */
export async function countClientAuthFailure(
  deps: Pick<AuthDeps, "limiter">,
  meta: RequestMeta,
  error: unknown,
): Promise<never> {
  if (error instanceof OAuthProtocolError && error.error === "invalid_client") {
    await deps.limiter.hit(null, [["oauth_client_auth_ip", meta.ipAddress ?? "unknown"]]);
  }
  throw error;
}
