import { randomBytes } from "node:crypto";
import { withTenant } from "../../db/with-tenant.js";
import { FailedPreconditionError, NotFoundError, PermissionDeniedError } from "../../errors.js";
import { findOAuthClient } from "../../repositories/oauth-clients.js";
import { recordOAuthConsent } from "../../repositories/oauth-consents.js";
import {
  answerOAuthInteraction,
  findLiveOAuthInteractionById,
  type OAuthInteractionRow,
} from "../../repositories/oauth-interactions.js";
import { findLiveBrowserSession } from "../../repositories/sessions.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import { audit } from "../audit.js";
import type { Principal, RequestMeta } from "../deps.js";
import { Violations } from "../validate.js";
import { type ProviderDeps, workspaceIssuer } from "./authorize.js";
import { answerHash } from "./browser-cookies.js";
import { consentNeeded } from "./consents.js";

/**
 * The headless interaction RPCs (OAuthService): a workspace's own UI, or the hosted page,
 * reads a pending authorization request and answers it; the answer's redirect_to sends the
 * browser back to the authorization endpoint for its code.
 */

/**
 * OAuthService.GetAuthorizationRequest. Anyone holding the request's id may look; a caller
 * signed in to the request's workspace also learns whether it still needs their consent (they
 * may have given it before). A caller of another workspace is answered as an anonymous one:
 * what a member of this workspace consented to is none of its business.
 */
export async function getAuthorizationRequest(
  deps: ProviderDeps,
  requestId: string,
  caller: Principal | undefined,
) {
  const interaction = await liveInteraction(deps, requestId);
  const workspaceId = interaction.workspace_id;
  const found = await withTenant(deps.pool, workspaceId, async (tx) => {
    const client = await findOAuthClient(tx, workspaceId, interaction.client_id);
    const workspace = await findWorkspaceById(tx, workspaceId);
    if (client === null || workspace === null) return null;
    const userId = caller?.workspaceId === workspaceId ? caller.userId : null;
    const needsConsent = await consentNeeded(tx, { client, request: interaction.request, userId });
    return { client, workspace, needsConsent };
  });
  if (found === null) throw new NotFoundError("no such authorization request");
  return { interaction, ...found };
}

/**
 * OAuthService.AcceptAuthorizationRequest: grants the request to the caller's session. Only a
 * session signed in to Keygate itself may; a grant's token (one a client holds) may not, so
 * no client can approve requests for another. Audited as `oauth_request_accepted`, with the
 * client, what it asked for and whether the consent is remembered.
 */
export async function acceptAuthorizationRequest(
  deps: ProviderDeps,
  meta: RequestMeta,
  principal: Principal,
  requestId: string,
): Promise<string> {
  const interaction = await liveInteraction(deps, requestId);
  if (interaction.workspace_id !== principal.workspaceId) {
    throw new PermissionDeniedError(
      "WORKSPACE_MISMATCH",
      "the request is for another workspace: sign in to that one",
    );
  }
  const now = deps.clock.now();
  const answer = randomBytes(32).toString("base64url");
  await withTenant(deps.pool, interaction.workspace_id, async (tx) => {
    const session = await findLiveBrowserSession(tx, {
      workspaceId: principal.workspaceId,
      sessionId: principal.sessionId,
      now,
    });
    if (session === null) {
      throw new PermissionDeniedError(
        "PERMISSION_DENIED",
        "only a session signed in to Keygate itself can accept an authorization request",
      );
    }
    const after = interaction.request.sign_in_after;
    if (after !== null && Math.floor(session.auth_time / 1000) < Math.floor(after / 1000)) {
      throw new FailedPreconditionError(
        "LOGIN_REQUIRED",
        "the client asks for a newer sign-in: sign in again, then accept",
      );
    }
    if (
      !(await answerOAuthInteraction(tx, {
        workspaceId: interaction.workspace_id,
        id: interaction.id,
        outcome: "accepted",
        sessionId: session.id,
        answerHash: answerHash(deps.tokenSecret, answer),
      }))
    ) {
      throw new NotFoundError("no such authorization request");
    }
    // Accepting is consenting (a UI shows a third-party client's request before it accepts):
    // remembered, so the next request for no more than this goes straight through.
    const client = await findOAuthClient(tx, interaction.workspace_id, interaction.client_id);
    if (client === null) throw new NotFoundError("no such authorization request");
    if (!client.first_party) {
      await recordOAuthConsent(tx, {
        workspaceId: interaction.workspace_id,
        userId: session.user_id,
        clientId: client.client_id,
        scopes: interaction.request.scopes,
        resources: interaction.request.resources,
        now,
      });
    }
    await audit(tx, deps, meta, {
      type: "oauth_request_accepted",
      workspaceId: interaction.workspace_id,
      userId: session.user_id,
      sessionId: session.id,
      outcome: "success",
      details: {
        client_id: client.client_id,
        scope: interaction.request.scopes.join(" "),
        resource: interaction.request.resources.join(" "),
        consent_remembered: !client.first_party,
      },
    });
  });
  return resumeUrl(deps, interaction, answer);
}

/**
 * OAuthService.RejectAuthorizationRequest: the client will get access_denied. Anyone holding
 * the request may decline it, signed in or not; audited as `oauth_request_rejected` with the
 * client and the caller's address.
 */
export async function rejectAuthorizationRequest(
  deps: ProviderDeps,
  meta: RequestMeta,
  requestId: string,
): Promise<string> {
  const interaction = await liveInteraction(deps, requestId);
  const answer = randomBytes(32).toString("base64url");
  const answered = await withTenant(deps.pool, interaction.workspace_id, async (tx) => {
    const first = await answerOAuthInteraction(tx, {
      workspaceId: interaction.workspace_id,
      id: interaction.id,
      outcome: "rejected",
      sessionId: null,
      answerHash: answerHash(deps.tokenSecret, answer),
    });
    if (first) {
      await audit(tx, deps, meta, {
        type: "oauth_request_rejected",
        workspaceId: interaction.workspace_id,
        outcome: "success",
        details: { client_id: interaction.client_id },
      });
    }
    return first;
  });
  // Only the first answer counts: a request accepted already cannot be declined after.
  if (!answered) throw new NotFoundError("no such authorization request");
  return resumeUrl(deps, interaction, answer);
}

function resumeUrl(deps: ProviderDeps, interaction: OAuthInteractionRow, answer: string): string {
  const issuer = workspaceIssuer(deps.issuerBase, interaction.workspace_id);
  return `${issuer}/oauth2/authorize/resume?request=${interaction.id}&answer=${answer}`;
}

async function liveInteraction(deps: ProviderDeps, requestId: string) {
  new Violations()
    .required("request_id", requestId, 100)
    .uuid("request_id", requestId)
    .throwIfAny();
  const interaction = await findLiveOAuthInteractionById(deps.pool, {
    id: requestId,
    now: deps.clock.now(),
  });
  if (interaction === null) throw new NotFoundError("no such authorization request");
  return interaction;
}
