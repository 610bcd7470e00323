import { newOpaqueToken, opaqueHash } from "../../crypto/opaque-tokens.js";
import { withTenant } from "../../db/with-tenant.js";
import { NotFoundError } from "../../errors.js";
import {
  findOAuthClient,
  type OAuthClientRow,
  replaceOAuthClientSecret,
} from "../../repositories/oauth-clients.js";
import { auditedCaller, type Caller, requireWorkspaceAdmin } from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AuthDeps, RequestMeta } from "../deps.js";
import { Violations } from "../validate.js";

/**
 * RotateOAuthClientSecret: a new secret, answered once and kept as a keyed hash; the old one
 * stops working at once. The client's client_credentials tokens were got with the old
 * secret, so they end too, on every instance (the rotation trigger of migration 026 revokes
 * them through the revocation feed). Its users' grants stay: their refresh tokens need the
 * client's secret, which the holder of the old one no longer has.
 */
export async function rotateOAuthClientSecret(
  deps: Pick<AuthDeps, "pool" | "clock" | "tokenSecret" | "revocations">,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; clientId: string },
): Promise<{ client: OAuthClientRow; secret: string }> {
  new Violations()
    .required("workspace_id", input.workspaceId, 100)
    .uuid("workspace_id", input.workspaceId)
    .required("client_id", input.clientId, 100)
    .throwIfAny();
  requireWorkspaceAdmin(caller, input.workspaceId);
  const secret = newOpaqueToken("client_secret");
  const client = await withTenant(deps.pool, input.workspaceId, async (tx) => {
    const row = await replaceOAuthClientSecret(tx, {
      workspaceId: input.workspaceId,
      clientId: input.clientId,
      secretHash: opaqueHash(deps.tokenSecret, "client_secret", secret),
    });
    if (row === null) {
      if ((await findOAuthClient(tx, input.workspaceId, input.clientId)) === null) {
        throw new NotFoundError("no client of this workspace has this id");
      }
      new Violations()
        .add("client_id", "authenticates without a secret (a public or private_key_jwt client)")
        .throwIfAny();
      throw new NotFoundError("no client of this workspace has this id");
    }
    await audit(tx, deps, meta, {
      type: "oauth_client_secret_rotated",
      workspaceId: input.workspaceId,
      ...auditedCaller(caller),
      outcome: "success",
      details: { client_id: input.clientId },
    });
    return row;
  });
  await deps.revocations.changed();
  return { client, secret };
}
