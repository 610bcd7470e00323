import type { CommonQueryMethods } from "slonik";
import {
  hashesEqual,
  hmacSha256,
  isOpaqueToken,
  newOpaqueToken,
  opaqueHash,
} from "../../crypto/opaque-tokens.js";
import { findLiveBrowserSession } from "../../repositories/sessions.js";
import { isUuid } from "../validate.js";

/**
 * What the provider keeps in the browser: a cookie naming the browser (authorization requests
 * and their answers are bound to it) and one naming the session it last signed in to a
 * client with. Both carry Keygate's MAC, so neither can be planted or moved.
 */

/**
 * The browser cookie: a random token and Keygate's MAC of it, so a value planted from outside
 * (a sibling host setting cookies for this one) is never taken as the browser's.
 */
export function newBrowserCookie(secret: Buffer): string {
  const token = newOpaqueToken("browser");
  return `${token}.${browserMac(secret, token)}`;
}

function browserMac(secret: Buffer, token: string): string {
  return hmacSha256(secret).update(`keygate/browser/v1\0${token}`).digest("base64url");
}

export function validBrowserCookie(secret: Buffer, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const [token = "", mac = ""] = value.split(".", 2);
  if (!isOpaqueToken("browser", token)) return undefined;
  return hashesEqual(Buffer.from(mac), Buffer.from(browserMac(secret, token))) ? value : undefined;
}

/** The secret in an answer's redirect_to, kept as a keyed hash on the request. */
export const answerHash = (secret: Buffer, answer: string) =>
  opaqueHash(secret, "browser", `answer\0${answer}`);

/** The provider session cookie: a session id and a MAC binding it to the workspace. */
export function providerSessionCookie(
  secret: Buffer,
  workspaceId: string,
  sessionId: string,
): string {
  return `${sessionId}.${providerSessionMac(secret, workspaceId, sessionId)}`;
}

function providerSessionMac(secret: Buffer, workspaceId: string, sessionId: string): string {
  return hmacSha256(secret)
    .update(`keygate/provider_session/v1\0${workspaceId}\0${sessionId}`)
    .digest("base64url");
}

export async function providerSessionOf(
  tx: CommonQueryMethods,
  secret: Buffer,
  workspaceId: string,
  cookie: string | undefined,
  now: Date,
) {
  if (cookie === undefined) return null;
  const [sessionId = "", mac = ""] = cookie.split(".", 2);
  if (!isUuid(sessionId)) return null;
  const expected = Buffer.from(providerSessionMac(secret, workspaceId, sessionId));
  if (!hashesEqual(Buffer.from(mac), expected)) return null;
  return findLiveBrowserSession(tx, { workspaceId, sessionId, now });
}
