import type { Client } from "@connectrpc/connect";
import * as client from "openid-client";
import type { OAuthService } from "../../gen/keygate/v1/oauth_service_pb.js";
import { CookieBrowser } from "./cookie-browser.js";
import { bearer } from "./fixtures.js";

/** An unmodified openid-client relying party of a workspace's provider (http on loopback). */
export function relyingParty(
  issuer: string,
  clientId: string,
  secret: string,
): Promise<client.Configuration> {
  return client.discovery(new URL(issuer), clientId, undefined, client.ClientSecretBasic(secret), {
    execute: [client.allowInsecureRequests],
  });
}

/**
 * A code grant the way a customer's own login UI makes one: the browser goes to /authorize,
 * the UI accepts the request with the signed-in person's Keygate token (the interaction
 * RPCs), the browser comes back with the code, the relying party exchanges it.
 */
export async function grantThroughRpcs(
  oauth: Client<typeof OAuthService>,
  config: client.Configuration,
  options: {
    redirectUri: string;
    accessToken: string;
    scope?: string;
    /** Extra authorization parameters; each `resource` is also sent at the exchange. */
    resources?: readonly string[];
  },
): Promise<client.TokenEndpointResponse> {
  const browser = new CookieBrowser();
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: options.redirectUri,
    scope: options.scope ?? "openid email",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
  });
  for (const resource of options.resources ?? []) url.searchParams.append("resource", resource);
  const first = await browser.get(url.toString());
  const location = new URL(first.headers.get("location") as string);
  const requestId = location.searchParams.get("request");
  if (requestId === null) throw new Error(`the provider refused: ${location}`);
  const { redirectTo } = await oauth.acceptAuthorizationRequest(
    { requestId },
    bearer(options.accessToken),
  );
  const back = await browser.get(redirectTo);
  const extra = new URLSearchParams();
  for (const resource of options.resources ?? []) extra.append("resource", resource);
  return client.authorizationCodeGrant(
    config,
    new URL(back.headers.get("location") as string),
    { pkceCodeVerifier: verifier, expectedState: state },
    extra,
  );
}
