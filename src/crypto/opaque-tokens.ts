import {
  createHmac,
  createSecretKey,
  type Hmac,
  type KeyObject,
  randomBytes,
  randomInt,
  timingSafeEqual,
} from "node:crypto";

/**
 * Opaque secrets handed to clients: refresh tokens ("kgr_"), link tokens ("kgl_") and 6-digit
 * codes. Each kind has its own prefix and its own HMAC domain, so one kind is never accepted
 * where another is expected (SECURITY.md 6). Only HMAC-SHA-256 values keyed with the server's
 * token secret are stored (SECURITY.md 7).
 */

/**
 * "recovery": a membership's recovery codes (src/domain/factors/recovery-codes.ts). The
 * OpenID Provider's (src/domain/oauth/): authorization codes, client secrets, the browser
 * cookie that ties an authorization request to the browser that made it, and the provider's
 * session cookie.
 */
export type OpaqueKind =
  | "refresh"
  | "link"
  | "code"
  | "recovery"
  | "authorization_code"
  | "client_secret"
  | "browser"
  | "provider_session";

const prefixes = {
  refresh: "kgr_",
  link: "kgl_",
  authorization_code: "kgac_",
  client_secret: "kgcs_",
  browser: "kgb_",
} as const;
type PrefixedKind = keyof typeof prefixes;
const tokenBody = /^[A-Za-z0-9_-]{43}$/;

export function newOpaqueToken(kind: PrefixedKind): string {
  return prefixes[kind] + randomBytes(32).toString("base64url");
}

/** True when `token` is well-formed for its kind (checked before any database work). */
export function isOpaqueToken(kind: PrefixedKind, token: string): boolean {
  return token.startsWith(prefixes[kind]) && tokenBody.test(token.slice(prefixes[kind].length));
}

const keys = new WeakMap<Buffer, KeyObject>();

/**
 * An HMAC-SHA-256 keyed with `secret`. The key object is made once per secret: keying an HMAC
 * with raw bytes imports them on every call, several times the cost of the hash itself.
 */
export function hmacSha256(secret: Buffer): Hmac {
  let key = keys.get(secret);
  if (!key) {
    key = createSecretKey(secret);
    keys.set(secret, key);
  }
  return createHmac("sha256", key);
}

export function opaqueHash(secret: Buffer, kind: OpaqueKind, value: string): Buffer {
  return hmacSha256(secret).update(`keygate/${kind}/v1\0${value}`).digest();
}

/**
 * The successor of a refresh token, derived from it with the server secret. A client that
 * lost the answer to a refresh and retries with the same parent inside the grace window gets
 * the same successor again (SECURITY.md 9) without the service ever storing a token in a
 * recoverable form: the output of HMAC-SHA-256 keyed with a random secret is as unpredictable
 * as fresh random bytes to anyone without the secret.
 */
export function successorRefreshToken(secret: Buffer, parent: string): string {
  return (
    prefixes.refresh +
    hmacSha256(secret).update(`keygate/refresh-successor/v1\0${parent}`).digest("base64url")
  );
}

/** Six digits from the CSPRNG, leading zeros included. */
export function newNumericCode(): string {
  return randomInt(0, 1_000_000).toString().padStart(6, "0");
}

export function hashesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
