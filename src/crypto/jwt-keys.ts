import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
} from "jose";
import { decryptPrivateKey, encryptPrivateKey } from "./key-encryption.js";

/**
 * The key pairs that sign Keygate's JWTs, as jose sees them: generated, exported and imported
 * per algorithm. Where they are stored, sealed and rotated is the key ring's business
 * (src/domain/signing-keys.ts).
 */

export type JwtAlgorithm = "ES256" | "EdDSA" | "RS256";

export const jwtAlgorithms: readonly JwtAlgorithm[] = ["ES256", "EdDSA", "RS256"];

export function isJwtAlgorithm(value: string): value is JwtAlgorithm {
  return (jwtAlgorithms as readonly string[]).includes(value);
}

const publicMembers: Record<string, readonly string[]> = {
  EC: ["kty", "crv", "x", "y"],
  OKP: ["kty", "crv", "x"],
  RSA: ["kty", "n", "e"],
};

/** Only the public members of a JWK, whatever the input carries. */
export function publicJwkOf(jwk: Record<string, unknown>): Record<string, string> {
  const members = publicMembers[String(jwk.kty)];
  if (!members) throw new Error(`unsupported key type ${String(jwk.kty)}`);
  const out: Record<string, string> = {};
  for (const m of members) {
    const value = jwk[m];
    if (typeof value !== "string") throw new Error(`public key lacks "${m}"`);
    out[m] = value;
  }
  return out;
}

/**
 * A new key pair. The kid is the RFC 7638 thumbprint of the public key, so a kid always names
 * the same key; the private JWK comes back only sealed under the key-encryption key, bound to
 * that kid (src/crypto/key-encryption.ts).
 */
export async function generateSigningKey(
  algorithm: JwtAlgorithm,
  keyEncryptionKey: Buffer,
): Promise<{ kid: string; publicJwk: Record<string, string>; privateKeyEncrypted: Buffer }> {
  const { publicKey, privateKey } = await generateKeyPair(algorithm, {
    extractable: true,
    ...(algorithm === "RS256" ? { modulusLength: 2048 } : {}),
  });
  const publicJwk = publicJwkOf(await exportJWK(publicKey));
  const kid = await calculateJwkThumbprint(publicJwk, "sha256");
  const privateJwk = Buffer.from(JSON.stringify(await exportJWK(privateKey)), "utf8");
  return {
    kid,
    publicJwk,
    privateKeyEncrypted: encryptPrivateKey(privateJwk, keyEncryptionKey, kid),
  };
}

export async function importVerifyKey(
  publicJwk: Record<string, string>,
  algorithm: JwtAlgorithm,
): Promise<CryptoKey> {
  return (await importJWK(publicJwk, algorithm)) as CryptoKey;
}

/**
 * The private key of a sealed JWK; throws KeyDecryptionError under another key-encryption key
 * or kid. Not extractable, so it never leaves the process.
 */
export async function openSigningKey(
  privateKeyEncrypted: Buffer,
  keyEncryptionKey: Buffer,
  kid: string,
  algorithm: JwtAlgorithm,
): Promise<CryptoKey> {
  const plaintext = decryptPrivateKey(privateKeyEncrypted, keyEncryptionKey, kid);
  const jwk = JSON.parse(plaintext.toString("utf8")) as JWK;
  return (await importJWK(jwk, algorithm, { extractable: false })) as CryptoKey;
}
