import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { AdminService } from "../../../gen/keygate/v1/admin_service_pb.js";
import { OAuthClientSchema } from "../../../gen/keygate/v1/types_pb.js";
import type { AdminDeps } from "../../domain/deps.js";
import type { OAuthClientRow } from "../../domain/model.js";
import { workspaceIssuer } from "../../domain/oauth/authorize.js";
import { rotateOAuthClientSecret } from "../../domain/oauth/client-secrets.js";
import {
  createOAuthClient,
  deleteOAuthClient,
  listOAuthClients,
} from "../../domain/oauth/clients.js";
import { meta } from "../call-context.js";
import { callerOf } from "./caller.js";

type Impl = ServiceImpl<typeof AdminService>;

/** AdminService RPCs about the OAuth clients of a workspace's OpenID Provider. */
export function adminOAuthClientsHandlers(deps: AdminDeps, issuerBase: string) {
  /** A client as the API shows it: never the secret nor its hash. */
  const clientOf = (c: OAuthClientRow) =>
    create(OAuthClientSchema, {
      clientId: c.client_id,
      workspaceId: c.workspace_id,
      name: c.name,
      redirectUris: c.redirect_uris,
      postLogoutRedirectUris: c.post_logout_redirect_uris,
      confidential: c.token_endpoint_auth_method !== "none",
      firstParty: c.first_party,
      scopes: c.scopes,
      createTime: timestampFromMs(c.created_at),
      issuer: workspaceIssuer(issuerBase, c.workspace_id),
      backchannelLogoutUri: c.backchannel_logout_uri ?? "",
      grantTypes: c.grant_types,
      tokenEndpointAuthMethod: c.token_endpoint_auth_method,
      jwks: c.jwks === null ? "" : JSON.stringify(c.jwks),
      registeredDynamically: c.registered_dynamically,
    });
  return {
    async createOAuthClient(req, ctx) {
      const { client, secret } = await createOAuthClient(deps, meta(ctx), callerOf(ctx), {
        workspaceId: req.workspaceId,
        name: req.name,
        redirectUris: req.redirectUris,
        postLogoutRedirectUris: req.postLogoutRedirectUris,
        confidential: req.confidential,
        firstParty: req.firstParty,
        scopes: req.scopes,
        backchannelLogoutUri: req.backchannelLogoutUri,
        grantTypes: req.grantTypes,
        tokenEndpointAuthMethod: req.tokenEndpointAuthMethod,
        jwks: req.jwks,
      });
      return { client: clientOf(client), clientSecret: secret ?? "" };
    },
    async listOAuthClients(req, ctx) {
      const clients = await listOAuthClients(deps, callerOf(ctx), req.workspaceId);
      return { clients: clients.map(clientOf) };
    },
    async deleteOAuthClient(req, ctx) {
      await deleteOAuthClient(deps, meta(ctx), callerOf(ctx), {
        workspaceId: req.workspaceId,
        clientId: req.clientId,
      });
      return {};
    },
    async rotateOAuthClientSecret(req, ctx) {
      const { client, secret } = await rotateOAuthClientSecret(deps, meta(ctx), callerOf(ctx), {
        workspaceId: req.workspaceId,
        clientId: req.clientId,
      });
      return { client: clientOf(client), clientSecret: secret };
    },
  } satisfies Pick<
    Impl,
    "createOAuthClient" | "listOAuthClients" | "deleteOAuthClient" | "rotateOAuthClientSecret"
  >;
}
