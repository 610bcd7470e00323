import { resourceProblem } from "../../resource-identifiers.js";
import { OAuthProtocolError } from "./errors.js";

/**
 * RFC 8707 resource indicators: the services a client wants its access tokens for. A token
 * granted for resources carries them as its `aud`, so each service (keygate/verify with its
 * `resource`) takes only the tokens meant for it.
 */

/** More would only make tokens long; a client asking for more is told so. */
export const maxResources = 5;
/** Together, so that a token naming them stays well under what Introspect reads (8,192). */
export const maxResourcesLength = 2048;

const invalidTarget = (description: string) =>
  new OAuthProtocolError("invalid_target", description);

/**
 * The resource parameters of a request, checked (resourceProblem: absolute https URIs, http on
 * a loopback host, never Keygate itself) and kept exactly as sent, since the service compares
 * its own identifier with them as strings.
 */
export function parseResources(
  values: readonly string[],
  keygate: { readonly audience: string; readonly issuerBase: string },
): string[] {
  const resources = [...new Set(values)];
  if (resources.length > maxResources) {
    throw invalidTarget(`at most ${maxResources} resources per request`);
  }
  if (resources.reduce((n, r) => n + r.length, 0) > maxResourcesLength) {
    throw invalidTarget(`the resources together must be at most ${maxResourcesLength} characters`);
  }
  for (const resource of resources) {
    const problem = resourceProblem(resource, keygate);
    if (problem !== null) throw invalidTarget(`resource ${problem}`);
  }
  return resources;
}

/**
 * The resources a token request may name (RFC 8707 section 2.2): some of those the grant was
 * made for, or all of them when it names none.
 */
export function narrowResources(
  granted: readonly string[],
  requested: readonly string[],
): readonly string[] {
  if (requested.length === 0) return granted;
  const outside = requested.filter((r) => !granted.includes(r));
  if (outside.length > 0) {
    throw invalidTarget(`the grant was not made for: ${outside.join(" ")}`);
  }
  return requested;
}
