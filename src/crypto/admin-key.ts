import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Admin keys look like `kg_<8 characters>_<43 characters>`: the first part is the visible
 * prefix stored in clear to find the key, the rest 256 random bits. Only SHA-256 of the whole
 * key is stored.
 */
const keyPattern = /^(kg_[A-Za-z0-9]{8})_([A-Za-z0-9_-]{43})$/;
const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

export interface NewAdminKey {
  readonly prefix: string;
  readonly secret: string;
  readonly hash: Buffer;
}

export function generateAdminKey(): NewAdminKey {
  const bytes = randomBytes(8);
  let id = "";
  for (const b of bytes) id += alphabet[b % alphabet.length];
  const prefix = `kg_${id}`;
  const secret = `${prefix}_${randomBytes(32).toString("base64url")}`;
  return { prefix, secret, hash: hashAdminKey(secret) };
}

export function hashAdminKey(secret: string): Buffer {
  return createHash("sha256").update(secret).digest();
}

/** The prefix of a well-formed key, or undefined. */
export function adminKeyPrefix(secret: string): string | undefined {
  return keyPattern.exec(secret)?.[1];
}

export function adminKeyMatches(secret: string, storedHash: Uint8Array): boolean {
  const hash = hashAdminKey(secret);
  return storedHash.length === hash.length && timingSafeEqual(hash, storedHash);
}
