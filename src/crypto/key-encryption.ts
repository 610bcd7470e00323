import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

/**
 * Secrets at rest: AES-256-GCM under a 32-byte key-encryption key (KEK) from configuration,
 * stored as one buffer
 *
 *   version (1 byte) | IV (12 bytes) | tag (16 bytes) | ciphertext
 *
 * Private signing keys are sealed under the KEK itself with their kid as additional
 * authenticated data, so a ciphertext copied onto another key's row does not decrypt; the
 * version byte is authenticated too, so it cannot be swapped for a later format's. Outbox
 * bodies are sealed under a key derived from the KEK for that purpose alone (HKDF), so the
 * random 96-bit IVs of many messages never share a key with the handful of signing keys, and
 * neither kind of ciphertext opens as the other.
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

function seal(plaintext: Buffer, key: Buffer, context: Buffer): Buffer {
  const iv = randomBytes(ivBytes);
  const cipher = createCipheriv("aes-256-gcm", key, iv, { authTagLength: tagBytes });
  cipher.setAAD(Buffer.concat([Buffer.of(version), context]));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.of(version), iv, cipher.getAuthTag(), ciphertext]);
}

/** The plaintext, or undefined when the bytes are not ours, or not for this key and context. */
function open(sealed: Uint8Array, key: Buffer, context: Buffer): Buffer | undefined {
  const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (bytes.length <= headerBytes || bytes[0] !== version) return undefined;
  const iv = bytes.subarray(1, 1 + ivBytes);
  const tag = bytes.subarray(1 + ivBytes, headerBytes);
  const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: tagBytes });
  decipher.setAAD(Buffer.concat([Buffer.of(version), context]));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(bytes.subarray(headerBytes)), decipher.final()]);
  } catch {
    return undefined;
  }
}

export function encryptPrivateKey(plaintext: Buffer, kek: Buffer, kid: string): Buffer {
  checkKek(kek);
  return seal(plaintext, kek, Buffer.from(kid, "utf8"));
}

export function decryptPrivateKey(sealed: Uint8Array, kek: Buffer, kid: string): Buffer {
  checkKek(kek);
  if (sealed.byteLength <= headerBytes || sealed[0] !== version) {
    throw new KeyDecryptionError(`signing key ${kid}: unknown format`);
  }
  const plaintext = open(sealed, kek, Buffer.from(kid, "utf8"));
  if (!plaintext) {
    throw new KeyDecryptionError(
      `signing key ${kid} does not decrypt: wrong key-encryption key, or the row was altered`,
    );
  }
  return plaintext;
}

/**
 * Seals and opens values of one kind under a key derived from the KEK for that kind, bound to
 * a context (which row the value belongs to) that must match when it is opened.
 */
export class SealingKey {
  private readonly key: Buffer;

  constructor(kek: Buffer, purpose: string) {
    checkKek(kek);
    this.key = Buffer.from(hkdfSync("sha256", kek, Buffer.alloc(0), `keygate ${purpose}`, 32));
  }

  seal(plaintext: Buffer, context: string): Buffer {
    return seal(plaintext, this.key, Buffer.from(context, "utf8"));
  }

  /** Throws KeyDecryptionError for bytes sealed under another KEK or context, or altered. */
  open(sealed: Uint8Array, context: string): Buffer {
    const plaintext = open(sealed, this.key, Buffer.from(context, "utf8"));
    if (!plaintext) {
      throw new KeyDecryptionError(
        "does not decrypt: wrong key-encryption key, another row's value, or altered bytes",
      );
    }
    return plaintext;
  }
}
