import type { CommonQueryMethods } from "slonik";
import type { OAuthClientRow } from "../../repositories/oauth-clients.js";
import { findOAuthConsent } from "../../repositories/oauth-consents.js";
import type { AuthorizationRequestParams } from "../../repositories/oauth-interactions.js";

/**
 * Whether a request needs the user's consent before a code is issued (docs/openid-provider.md,
 * "Clients"): always with prompt=consent; never for a first-party client otherwise; for a
 * third-party one, unless the user consented to everything it asks for (every scope and every
 * resource) before. `userId` null: nobody known yet, so nothing is covered.
 */
export async function consentNeeded(
  tx: CommonQueryMethods,
  input: {
    client: OAuthClientRow;
    request: Pick<AuthorizationRequestParams, "scopes" | "resources" | "consent_prompted">;
    userId: string | null;
  },
): Promise<boolean> {
  const { client, request, userId } = input;
  if (request.consent_prompted) return true;
  if (client.first_party) return false;
  if (userId === null) return true;
  const consent = await findOAuthConsent(tx, {
    workspaceId: client.workspace_id,
    userId,
    clientId: client.client_id,
  });
  return (
    consent === null ||
    !request.scopes.every((s) => consent.scopes.includes(s)) ||
    !request.resources.every((r) => consent.resources.includes(r))
  );
}
