import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AuthorizationRequestSchema,
  type OAuthService,
} from "../../gen/keygate/v1/oauth_service_pb.js";
import type { ProviderDeps } from "../domain/oauth/authorize.js";
import {
  acceptAuthorizationRequest,
  getAuthorizationRequest,
  rejectAuthorizationRequest,
} from "../domain/oauth/interactions.js";
import { maybePrincipal, meta, principal } from "./call-context.js";

/** OAuthService: the sign-in step of the workspaces' OpenID Providers. */
export function oauthServiceHandlers(deps: ProviderDeps): ServiceImpl<typeof OAuthService> {
  return {
    async getAuthorizationRequest(req, ctx) {
      const { interaction, client, workspace, needsConsent } = await getAuthorizationRequest(
        deps,
        req.requestId,
        maybePrincipal(ctx),
      );
      const after = interaction.request.sign_in_after;
      return {
        request: create(AuthorizationRequestSchema, {
          id: interaction.id,
          workspaceId: interaction.workspace_id,
          clientId: client.client_id,
          clientName: client.name,
          scopes: interaction.request.scopes,
          needsConsent,
          signInAfter: after === null ? undefined : timestampFromMs(after),
          loginHint: interaction.request.login_hint ?? "",
          expireTime: timestampFromMs(interaction.expires_at),
          workspaceSlug: workspace.slug,
          workspaceName: workspace.name,
          resources: interaction.request.resources,
          clientRegisteredDynamically: client.registered_dynamically,
        }),
      };
    },
    async acceptAuthorizationRequest(req, ctx) {
      return {
        redirectTo: await acceptAuthorizationRequest(
          deps,
          meta(ctx),
          principal(ctx),
          req.requestId,
        ),
      };
    },
    async rejectAuthorizationRequest(req, ctx) {
      return { redirectTo: await rejectAuthorizationRequest(deps, meta(ctx), req.requestId) };
    },
  };
}
