import { OAuthProtocolError } from "./errors.js";

/**
 * RFC 8707 resource indicators: the services a client wants its access tokens for. A token
 * granted for resources carries them as its `aud`, so each service (keygate/verify with its
 * `resource`) takes only the tokens meant for it.
 */

/** More would only make tokens long; a client asking for more is told so. */
export const maxResources = 5;
const loopbackHosts = new Set(["localhost", "127.0.0.1", "[::1]"]);

const invalidTarget = (description: string) =>
  new OAuthProtocolError("invalid_target", description);

/**
 * The resource parameters of a request, checked: absolute https URIs (http on a loopback host
 * for a service under development) without a fragment (RFC 8707 section 2), kept exactly as
 * sent since the service compares its own identifier with them as strings. Keygate itself is
 * no resource: its own audience and its providers' issuers are refused, so no client token can
 * pass for one of Keygate's own sessions or reach another workspace's provider.
 */
export function parseResources(
  values: readonly string[],
  keygate: { readonly audience: string; readonly issuerBase: string },
): string[] {
  const resources = [...new Set(values)];
  if (resources.length > maxResources) {
    throw invalidTarget(`at most ${maxResources} resources per request`);
  }
  for (const resource of resources) {
    const problem = resourceProblem(resource, keygate);
    if (problem !== null) throw invalidTarget(`resource ${problem}`);
  }
  return resources;
}

/** What is wrong with a resource identifier (see parseResources), or null. */
export function resourceProblem(
  resource: string,
  keygate: { readonly audience: string; readonly issuerBase: string },
): string | null {
  if (resource === "" || resource.length > 2000) return "must be 1 to 2000 characters";
  let url: URL;
  try {
    url = new URL(resource);
  } catch {
    return "must be an absolute URI";
  }
  if (resource.includes("#")) return "must not have a fragment";
  if (url.username !== "" || url.password !== "") return "must not carry credentials";
  if (url.protocol === "http:" && !loopbackHosts.has(url.hostname)) {
    return "must be https (http only for loopback hosts)";
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return "must be an https URI";
  if (namesKeygate(url, resource, keygate)) {
    return "names Keygate itself: leave it out to get a token for the provider";
  }
  return null;
}

/**
 * Whether a resource is Keygate under any spelling: the audience as written, or as a URL once
 * normalised (scheme and host case, default or zero-padded port, dot segments, a trailing dot
 * or slash, a query); or anything on the issuer's origin, which serves only Keygate (loopback
 * names counting as one host, so localhost and 127.0.0.1 are the same deployment).
 */
function namesKeygate(
  url: URL,
  resource: string,
  keygate: { readonly audience: string; readonly issuerBase: string },
): boolean {
  if (resource.replace(/\/+$/, "") === keygate.audience.replace(/\/+$/, "")) return true;
  const audience = URL.canParse(keygate.audience) ? new URL(keygate.audience) : null;
  if (audience !== null && sameOrigin(url, audience) && samePath(url, audience)) return true;
  return URL.canParse(keygate.issuerBase) && sameOrigin(url, new URL(keygate.issuerBase));
}

function sameOrigin(a: URL, b: URL): boolean {
  const host = (u: URL) => {
    const name = u.hostname.replace(/\.$/, "");
    return loopbackHosts.has(name) ? "loopback" : name;
  };
  return a.protocol === b.protocol && host(a) === host(b) && a.port === b.port;
}

const samePath = (a: URL, b: URL) =>
  a.pathname.replace(/\/+$/, "") === b.pathname.replace(/\/+$/, "");

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
