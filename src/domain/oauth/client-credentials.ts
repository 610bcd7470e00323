import { withTenant } from "../../db/with-tenant.js";
import { type OAuthClientRow, recordMachineTokenExpiry } from "../../repositories/oauth-clients.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import { effectiveSettings } from "../settings.js";
import { OAuthProtocolError } from "./errors.js";
import { type GrantType, isUserScope } from "./machine-clients.js";
import { parseScope } from "./scopes.js";
import type { TokenDeps } from "./token.js";

/** The answer to client_credentials (RFC 6749 section 4.4.3): no refresh token, no ID token. */
export interface ClientCredentialsAnswer {
  readonly access_token: string;
  readonly token_type: "Bearer";
  readonly expires_in: number;
  readonly scope: string;
}

/** A grant type the client was not registered for is refused (RFC 6749 section 5.2). */
export function requireGrantType(client: OAuthClientRow, grantType: GrantType): void {
  if (!client.grant_types.includes(grantType)) {
    throw new OAuthProtocolError(
      "unauthorized_client",
      `this client may not use the ${grantType} grant`,
    );
  }
}

/**
 * grant_type=client_credentials (RFC 6749 section 4.4): an access token for the client
 * itself. It is no session (sessions belong to users): its sid is the client's
 * machine_session_id, which deleting the client or rotating its secret revokes through the
 * revocation feed (migration 026). The scopes are the ones asked for, all of them registered
 * and none about a user; without `scope`, every non-user scope the client has. With RFC 8707
 * resources (checked by the caller, parseResources) the token is for them: its `aud`, which
 * keygate/verify with that resource, and Introspect or Envoy asked about it, accept; without,
 * it is for the workspace's provider (Introspect without a resource). Each grant is
 * in the call log and counted in the metrics, not in the audit log: a row per token would
 * grow it by the grant rate.
 */
export async function clientCredentialsGrant(
  deps: TokenDeps,
  client: OAuthClientRow,
  request: { readonly scope: string | undefined; readonly resources: readonly string[] },
): Promise<ClientCredentialsAnswer> {
  requireGrantType(client, "client_credentials");
  if (client.token_endpoint_auth_method === "none") {
    throw new OAuthProtocolError("unauthorized_client", "a public client has no token of its own");
  }
  const asked = parseScope(request.scope);
  const aboutUsers = asked.filter(isUserScope);
  if (aboutUsers.length > 0) {
    throw new OAuthProtocolError(
      "invalid_scope",
      `${aboutUsers.join(" ")} concern a user; a client's own token has none`,
    );
  }
  const unknown = asked.filter((s) => !client.scopes.includes(s));
  if (unknown.length > 0) {
    throw new OAuthProtocolError(
      "invalid_scope",
      `this client may not ask for: ${unknown.join(" ")}`,
    );
  }
  const scopes = asked.length > 0 ? asked : client.scopes.filter((s) => !isUserScope(s));
  const workspaceId = client.workspace_id;
  // One statement on the pool: a deliberate service-role read (migrations/011) of the
  // workspace the URL names, for its token lifetime.
  const workspace = await findWorkspaceById(deps.pool, workspaceId);
  if (workspace === null) {
    throw new OAuthProtocolError("invalid_client", "client authentication failed", 401);
  }
  const ttlSeconds = effectiveSettings(
    workspace,
    deps.settings.workspaceDefaults,
  ).access_token_ttl_seconds;
  // A minute beyond the lifetime: the token is signed after the record commits.
  const until = new Date(deps.clock.now().getTime() + (ttlSeconds + 60) * 1000);
  // Before the token is signed, the client row must say that a revocation of the id the token
  // carries lasts at least as long as the token (a rotation or deletion revokes the id until
  // machine_access_expires_at). The client row read for this request usually says so already,
  // and then nothing is written: a rotation committed since then revoked the id for that long.
  // Otherwise the record is moved on, which fails if the id is no longer the client's.
  if ((client.machine_access_expires_at ?? 0) < until.getTime()) {
    const recorded = await withTenant(deps.pool, workspaceId, (tx) =>
      recordMachineTokenExpiry(tx, {
        workspaceId,
        clientId: client.client_id,
        machineSessionId: client.machine_session_id,
        until,
      }),
    );
    if (!recorded) {
      throw new OAuthProtocolError("invalid_client", "client authentication failed", 401);
    }
  }
  const token = await deps.tokens.signClientAccessToken({
    clientId: client.client_id,
    workspaceId,
    machineSessionId: client.machine_session_id,
    scopes,
    resources: request.resources,
    ttlSeconds,
  });
  return {
    access_token: token.token,
    token_type: "Bearer",
    expires_in: Math.max(
      0,
      Math.round((token.expiresAt.getTime() - deps.clock.now().getTime()) / 1000),
    ),
    scope: scopes.join(" "),
  };
}
