import { isIP } from "node:net";

/**
 * Who counts as one client for per-IP limits. One host can usually choose among many
 * addresses: every address of its IPv6 prefix (a /64 holds 2^64), an IPv4 address written as
 * IPv4-mapped IPv6, and both loopbacks. Limits keyed by the raw address would give each of
 * them a full budget, so they are keyed by the bucket these functions answer.
 */

/** The eight 16-bit groups of an IPv6 address, or undefined when it is not one. */
function ipv6Groups(ip: string): number[] | undefined {
  const address = ip.replace(/%.*$/, ""); // zone index: fe80::1%eth0
  if (isIP(address) !== 6) return undefined;
  let text = address;
  const tail: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = (dotted[1] as string).split(".").map(Number) as [
      number,
      number,
      number,
      number,
    ];
    tail.push((a << 8) | b, (c << 8) | d);
    text = text.slice(0, -(dotted[1] as string).length);
    if (text.endsWith(":") && !text.endsWith("::")) text = text.slice(0, -1);
  }
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((g) => parseInt(g, 16)));
  const [head = "", rest] = text.split("::");
  const left = parse(head);
  const right = [...parse(rest ?? ""), ...tail];
  if (rest === undefined) return [...left, ...tail];
  const zeros = new Array<number>(8 - left.length - right.length).fill(0);
  return [...left, ...zeros, ...right];
}

/** IPv4 in any IPv6 spelling (::ffff:a.b.c.d, ::ffff:0a0b:0c0d) becomes plain IPv4. */
export function normalizeIp(ip: string): string {
  const groups = ipv6Groups(ip);
  if (!groups) return ip;
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (!mapped) return ip;
  const [hi = 0, lo = 0] = groups.slice(6);
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

/**
 * The bucket of a client address: IPv4 addresses stand for themselves, IPv6 ones for their
 * prefix of `ipv6PrefixLength` bits (written `2001:db8:1:2::/64`), and every loopback address
 * (127.0.0.0/8, ::1) is one client. Anything that is not an address is its own bucket.
 */
export function ipBucket(ip: string, ipv6PrefixLength: number): string {
  const address = normalizeIp(ip);
  const family = isIP(address);
  if (family === 4) return address.startsWith("127.") ? "loopback" : address;
  const groups = ipv6Groups(address);
  if (!groups) return address;
  if (groups.slice(0, 7).every((g) => g === 0) && groups[7] === 1) return "loopback";
  const masked = groups.map((g, i) => {
    const bits = Math.min(16, Math.max(0, ipv6PrefixLength - i * 16));
    return bits === 0 ? 0 : g & (0xffff << (16 - bits)) & 0xffff;
  });
  // The shortest spelling: the first longest run of zero groups becomes "::".
  let best = { at: -1, length: 0 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && masked[j] === 0) j++;
    if (j - i > best.length && j - i > 1) best = { at: i, length: j - i };
    i = j === i ? i + 1 : j;
  }
  const hex = masked.map((g) => g.toString(16));
  const text =
    best.at < 0
      ? hex.join(":")
      : `${hex.slice(0, best.at).join(":")}::${hex.slice(best.at + best.length).join(":")}`;
  return `${text}/${ipv6PrefixLength}`;
}
