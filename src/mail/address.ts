/**
 * The one grammar of an email address that Keygate accepts, used both where requests are
 * validated and where mail is enqueued, so an address that passes validation can always be
 * sent to: one mailbox, `local@domain`, nothing a mail transport would read as a list, a
 * display name, a comment, a quoted string, a route or a header break.
 *
 * The local part is RFC 5322's dot-atom (atext runs separated by single dots) with any
 * non-ASCII character allowed as RFC 6531 does; quoted local parts are not accepted. The
 * domain is dot-separated labels of letters, digits and inner hyphens (non-ASCII letters
 * allowed, for internationalised names), at least two of them, no address literals.
 */
const atom = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~\\-\\u0080-\\u{10FFFF}]+";
const label =
  "[A-Za-z0-9\\u0080-\\u{10FFFF}](?:[A-Za-z0-9\\-\\u0080-\\u{10FFFF}]*[A-Za-z0-9\\u0080-\\u{10FFFF}])?";
const mailbox = new RegExp(`^${atom}(?:\\.${atom})*@${label}(?:\\.${label})+$`, "u");
// Non-ASCII that is not text: controls, separators and format characters (bidi overrides,
// zero-width marks) have no place in an address, and some transports treat them as breaks.
const notText = /[\p{Cc}\p{Cf}\p{Z}\p{Cs}\p{Co}\p{Cn}]/u;

/** Longest address accepted (RFC 5321's path limit less the angle brackets). */
export const maxAddressLength = 254;

/** True when `value` is exactly one mailbox in Keygate's grammar (no surrounding spaces). */
export function isMailboxAddress(value: string): boolean {
  if (value.length > maxAddressLength || notText.test(value)) return false;
  const at = value.lastIndexOf("@");
  // RFC 5321: a local part of at most 64 octets.
  if (at < 1 || Buffer.byteLength(value.slice(0, at), "utf8") > 64) return false;
  return mailbox.test(value);
}
