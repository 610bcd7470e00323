import { newOpaqueToken, opaqueHash } from "../../crypto/opaque-tokens.js";
import { NotFoundError } from "../../errors.js";
import {
  findOAuthClient,
  type OAuthClientRow,
  replaceOAuthClientSecret,
} from "../../repositories/oauth-clients.js";
import type { Caller } from "../admin-auth.js";
import type { AuthDeps, RequestMeta } from "../deps.js";
import { Violations } from "../validate.js";
import { changeOAuthClient } from "./clients.js";

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
  const secret = newOpaqueToken("client_secret");
  const client = await changeOAuthClient(
    deps,
    meta,
    caller,
    input,
    "oauth_client_secret_rotated",
    async (tx) => {
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
      return row;
    },
  );
  return { client, secret };
}
