import { SealingKey } from "./key-encryption.js";

/** The membership an authenticator-app secret belongs to. */
export interface TotpMember {
  readonly workspaceId: string;
  readonly userId: string;
}

/**
 * The key that seals authenticator-app secrets at rest (derived from the key-encryption key
 * for this purpose alone), bound to the membership as associated data: a sealed secret
 * copied onto another membership's row, in this workspace or another, does not open.
 */
export class TotpSecretKey {
  private readonly key: SealingKey;

  constructor(keyEncryptionKey: Buffer) {
    this.key = new SealingKey(keyEncryptionKey, "totp_factors secret v1");
  }

  seal(secret: Buffer, member: TotpMember): Buffer {
    return this.key.seal(secret, context(member));
  }

  /** Throws KeyDecryptionError for another membership's, another KEK's or altered bytes. */
  open(sealed: Uint8Array, member: TotpMember): Buffer {
    return this.key.open(sealed, context(member));
  }
}

const context = (m: TotpMember) => JSON.stringify(["totp_factors", m.workspaceId, m.userId]);
