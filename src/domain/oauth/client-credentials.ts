import { withTenant } from "../../db/with-tenant.js";
import { type OAuthClientRow, recordMachineTokenExpiry } from "../../repositories/oauth-clients.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import { audit } from "../audit.js";
import type { RequestMeta } from "../deps.js";
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
 * and none about a user; without `scope`, every non-user scope the client has.
 */
export async function clientCredentialsGrant(
  deps: TokenDeps,
  meta: RequestMeta,
  client: OAuthClientRow,
  scopeParameter: string | undefined,
): Promise<ClientCredentialsAnswer> {
  requireGrantType(client, "client_credentials");
  if (client.token_endpoint_auth_method === "none") {
    throw new OAuthProtocolError("unauthorized_client", "a public client has no token of its own");
  }
  const asked = parseScope(scopeParameter);
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
  const workspace = await withTenant(deps.pool, workspaceId, (tx) =>
    findWorkspaceById(tx, workspaceId),
  );
  if (workspace === null) {
    throw new OAuthProtocolError("invalid_client", "client authentication failed", 401);
  }
  const settings = effectiveSettings(workspace, deps.settings.workspaceDefaults);
  const token = await deps.tokens.signClientAccessToken({
    clientId: client.client_id,
    workspaceId,
    machineSessionId: client.machine_session_id,
    scopes,
    ttlSeconds: settings.access_token_ttl_seconds,
  });
  // Recorded before the token is handed out, under the id it carries: a rotation or deletion
  // committed in between makes this fail, and one after it revokes the token.
  const recorded = await withTenant(deps.pool, workspaceId, async (tx) => {
    const ok = await recordMachineTokenExpiry(tx, {
      workspaceId,
      clientId: client.client_id,
      machineSessionId: client.machine_session_id,
      until: token.expiresAt,
    });
    if (ok) {
      await audit(tx, deps, meta, {
        type: "oauth_client_token_issued",
        workspaceId,
        outcome: "success",
        details: { client_id: client.client_id, scope: scopes.join(" "), jti: token.jti },
      });
    }
    return ok;
  });
  if (!recorded) {
    throw new OAuthProtocolError("invalid_client", "client authentication failed", 401);
  }
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
