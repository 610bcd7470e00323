import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

/**
 * Private signing keys at rest: AES-256-GCM under a 32-byte key-encryption key (KEK) from
 * configuration, stored as one buffer
 *
 *   version (1 byte) | IV (12 bytes) | tag (16 bytes) | ciphertext
 *
 * The kid is additional authenticated data, so a ciphertext copied onto another key's row does
 * not decrypt; the version byte is authenticated too, so it cannot be swapped for a later
 * format's. A random 96-bit IV per encryption is safe far beyond the handful of keys a
 * deployment ever encrypts under one KEK.
 */

const version = 1;
const ivBytes = 12;
const tagBytes = 16;
const headerBytes = 1 + ivBytes + tagBytes;

/** The stored key could not be decrypted: wrong KEK, another kid, or altered bytes. */
export class KeyDecryptionError extends Error {
  override name = "KeyDecryptionError";
}

function checkKek(kek: Buffer): void {
  if (kek.length !== 32) {
    throw new RangeError(`the key-encryption key must be 32 bytes, got ${kek.length}`);
  }
}

function additionalData(kid: string): Buffer {
  return Buffer.concat([Buffer.of(version), Buffer.from(kid, "utf8")]);
}

export function encryptPrivateKey(plaintext: Buffer, kek: Buffer, kid: string): Buffer {
  checkKek(kek);
  const iv = randomBytes(ivBytes);
  const cipher = createCipheriv("aes-256-gcm", kek, iv, { authTagLength: tagBytes });
  cipher.setAAD(additionalData(kid));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.of(version), iv, cipher.getAuthTag(), ciphertext]);
}

export function decryptPrivateKey(sealed: Uint8Array, kek: Buffer, kid: string): Buffer {
  checkKek(kek);
  const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (bytes.length <= headerBytes || bytes[0] !== version) {
    throw new KeyDecryptionError(`signing key ${kid}: unknown format`);
  }
  const iv = bytes.subarray(1, 1 + ivBytes);
  const tag = bytes.subarray(1 + ivBytes, headerBytes);
  const decipher = createDecipheriv("aes-256-gcm", kek, iv, { authTagLength: tagBytes });
  decipher.setAAD(additionalData(kid));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(bytes.subarray(headerBytes)), decipher.final()]);
  } catch {
    throw new KeyDecryptionError(
      `signing key ${kid} does not decrypt: wrong key-encryption key, or the row was altered`,
    );
  }
}
