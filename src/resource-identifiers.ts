/**
 * RFC 8707 resource identifiers, as every part of Keygate judges them: the token endpoint
 * and Introspect (src/domain/oauth/resources.ts) and keygate/verify, which refuses to be built
 * for a resource no token can be issued for.
 */

const loopbackHosts = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * What is wrong with a resource identifier, or null: it must be an absolute https URI (http on
 * a loopback host, for a service under development) written as one, `scheme://host...` in
 * printable ASCII (RFC 3986 has no spaces, controls or other characters: percent-encode
 * them), with no fragment or credentials (RFC 8707 section 2); and it must not be Keygate
 * itself: its own audience (when known) and anything on its issuer's origin, which serves
 * only Keygate, are refused, so no client token can pass for one of Keygate's own sessions'
 * or reach a workspace's provider.
 */
export function resourceProblem(
  resource: string,
  keygate: { readonly audience?: string | undefined; readonly issuerBase: string },
): string | null {
  if (resource === "" || resource.length > 2000) return "must be 1 to 2000 characters";
  if (!/^[\x21-\x7e]+$/.test(resource)) {
    return "must be printable ASCII without spaces (percent-encode the rest)";
  }
  if (!/^https?:\/\/[^/?#]/i.test(resource)) return "must be an absolute https URI";
  // Characters and forms RFC 3986 has no place for, which parsers read differently.
  if (resource.includes("\\")) return "must not contain a backslash";
  if (/%(?![0-9a-f]{2})/i.test(resource)) return "must percent-encode with two hex digits";
  if (/^[^:]+:\/\/[^/?#]*@/.test(resource)) return "must not carry credentials";
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
  keygate: { readonly audience?: string | undefined; readonly issuerBase: string },
): boolean {
  const { audience } = keygate;
  if (audience !== undefined && audience !== "") {
    if (resource.replace(/\/+$/, "") === audience.replace(/\/+$/, "")) return true;
    const parsed = URL.canParse(audience) ? new URL(audience) : null;
    if (parsed !== null && sameOrigin(url, parsed) && samePath(url, parsed)) return true;
  }
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
