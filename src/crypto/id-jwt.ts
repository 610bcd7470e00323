import { compactVerify, decodeProtectedHeader, SignJWT } from "jose";
import { type JwtKeyHint, type JwtSigner, type JwtVerifyKey, maxTokenLength } from "./jwt.js";

/**
 * The OpenID Provider's ID tokens and back-channel logout tokens, as bytes: signed with the
 * key it is given, read back (an id_token_hint) against the key its kid found.
 */

/** An ID token (or logout token): the caller gives every claim but iat and exp. */
export function signIdJwt(
  signer: JwtSigner,
  input: {
    claims: Record<string, unknown>;
    typ: string;
    /** Epoch seconds. */
    issuedAt: number;
    expiresAt: number;
  },
): Promise<string> {
  return new SignJWT({ ...input.claims })
    .setProtectedHeader({ alg: signer.algorithm, kid: signer.kid, typ: input.typ })
    .setIssuedAt(input.issuedAt)
    .setExpirationTime(input.expiresAt)
    .sign(signer.key);
}

/** The alg and kid of something that may be an ID token, or null when it cannot be one. */
export function idTokenKeyHint(token: string): JwtKeyHint | null {
  if (typeof token !== "string" || token.length === 0 || token.length > maxTokenLength) {
    return null;
  }
  try {
    const header = decodeProtectedHeader(token);
    if (typeof header.kid !== "string" || header.typ !== "JWT") return null;
    return { alg: header.alg ?? "", kid: header.kid };
  } catch {
    return null;
  }
}

/**
 * The claims of an ID token, expired or not (an id_token_hint at logout may be old): the
 * signature and the issuer are checked, nothing else. Null when it is not one.
 */
export async function idTokenClaims(
  token: string,
  hint: JwtKeyHint,
  key: JwtVerifyKey,
  issuer: string,
): Promise<Record<string, unknown> | null> {
  if (hint.alg !== key.algorithm) return null;
  try {
    const { payload } = await compactVerify(token, key.verifyKey, {
      algorithms: [key.algorithm],
    });
    const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    return claims.iss === issuer ? claims : null;
  } catch {
    return null;
  }
}
