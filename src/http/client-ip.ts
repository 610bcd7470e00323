import { BlockList, isIP } from "node:net";
import { parseCidr } from "../config.js";
import { normalizeIp as normalize } from "../domain/ip-bucket.js";

/**
 * The client's address: the connection's peer, unless the peer is a trusted proxy; then the
 * X-Forwarded-For entries are walked from the right (the ones the trusted proxies appended),
 * skipping trusted addresses, and the first untrusted one is the client. Anything a client
 * wrote itself at the left of the header is never believed.
 */
export function clientIpResolver(trustedProxies: readonly string[]) {
  const isTrusted = isTrustedProxy(trustedProxies);
  return (peer: string, forwardedFor: string | string[] | undefined): string => {
    const address = normalize(peer);
    if (trustedProxies.length === 0 || !isTrusted(address) || forwardedFor === undefined)
      return address;
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor)
      .split(",")
      .map((h) => normalize(h.trim()))
      .filter((h) => isIP(h) !== 0);
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i] as string;
      if (!isTrusted(hop)) return hop;
    }
    return hops[0] ?? address;
  };
}

/** Whether an address is one of the trusted proxies (IP addresses or CIDR ranges). */
export function isTrustedProxy(trustedProxies: readonly string[]): (ip: string) => boolean {
  const trusted = new BlockList();
  for (const entry of trustedProxies) {
    const cidr = parseCidr(entry);
    if (cidr) trusted.addSubnet(cidr[0], cidr[1], cidr[2]);
  }
  return (peer: string) => {
    const ip = normalize(peer);
    const family = isIP(ip);
    return family !== 0 && trusted.check(ip, family === 4 ? "ipv4" : "ipv6");
  };
}
