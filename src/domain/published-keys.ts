import type { DatabasePool } from "slonik";
import type { Clock } from "../clock.js";
import type { JwtSigner, JwtVerifyKey } from "../crypto/jwt.js";
import { importVerifyKey, openSigningKey, publicJwkOf } from "../crypto/jwt-keys.js";
import { UnavailableError } from "../errors.js";
import type { Logger } from "../log.js";
import {
  listPublishedSigningKeys,
  type SigningKeyPurpose,
  type SigningKeyRow,
} from "../repositories/signing-keys.js";
import { type SigningKeyRotation, signingKeySetMaxAgeMs } from "./signing-key-rotation.js";

/** Unknown kids reload the key set at most this often. */
const unknownKidReloadMs = 1_000;

export interface PublishedKey extends JwtVerifyKey {
  readonly kid: string;
  readonly publicJwk: Readonly<Record<string, string>>;
  /** Epoch ms after which a retired key is no longer published; null while next or active. */
  readonly unpublishAfter: number | null;
}

/**
 * One purpose's published keys as this instance holds them (the ring's memory, see
 * SigningKeys): imported once per kid, the active one ready to sign, reloaded when the set
 * may be stale or a token names an unknown kid (at most once a second), each load taking part
 * in the rotation (a due key is promoted on the way).
 */
export class PublishedKeys {
  private published = new Map<string, PublishedKey>();
  private signer: JwtSigner | undefined;
  /** Clock time of the last load attempt, successful or not. */
  private lastLoadAt = Number.NEGATIVE_INFINITY;
  private loading: Promise<void> | undefined;

  constructor(
    private readonly deps: {
      pool: DatabasePool;
      keyEncryptionKey: Buffer;
      purpose: SigningKeyPurpose;
      clock: Clock;
      logger: Logger;
      rotation: SigningKeyRotation;
    },
  ) {}

  /** The active key as last loaded, if any. */
  get active(): JwtSigner | undefined {
    return this.signer;
  }

  /** Reads the published keys from the database (after any load already under way). */
  reload(): Promise<void> {
    const run = (this.loading ?? Promise.resolve()).then(() => this.load());
    // What later callers wait for; it never rejects, the caller of this load gets the error.
    const settled: Promise<void> = run
      .catch(() => {})
      .finally(() => {
        if (this.loading === settled) this.loading = undefined;
      });
    this.loading = settled;
    return run;
  }

  private async load(): Promise<void> {
    const now = this.deps.clock.now();
    this.lastLoadAt = now.getTime();
    let rows = await listPublishedSigningKeys(this.deps.pool, this.deps.purpose, now);
    if (await this.deps.rotation.promoteDueKey(rows, now)) {
      rows = await listPublishedSigningKeys(this.deps.pool, this.deps.purpose, now);
    }
    const published = new Map<string, PublishedKey>();
    let signer: JwtSigner | undefined;
    for (const row of rows) {
      published.set(row.kid, await this.publishedKey(row));
      if (row.status === "active") {
        signer = this.signer?.kid === row.kid ? this.signer : await this.importSigner(row);
      }
    }
    this.published = published;
    this.signer = signer;
  }

  private async publishedKey(row: SigningKeyRow): Promise<PublishedKey> {
    const unpublishAfter = row.status === "retired" ? row.unpublish_after : null;
    const cached = this.published.get(row.kid);
    // A kid is the thumbprint of its public key, so a cached import stays right for it.
    if (cached && cached.algorithm === row.algorithm) return { ...cached, unpublishAfter };
    const publicJwk = publicJwkOf(row.public_jwk);
    const verifyKey = await importVerifyKey(publicJwk, row.algorithm);
    return { kid: row.kid, algorithm: row.algorithm, publicJwk, verifyKey, unpublishAfter };
  }

  private async importSigner(row: SigningKeyRow): Promise<JwtSigner> {
    const key = await openSigningKey(
      row.private_key_encrypted,
      this.deps.keyEncryptionKey,
      row.kid,
      row.algorithm,
    );
    return { kid: row.kid, algorithm: row.algorithm, key };
  }

  /** The active key, reloaded first when the key set may be stale (signingKeySetMaxAgeMs). */
  async currentSigner(now: Date): Promise<JwtSigner> {
    if (now.getTime() - this.lastLoadAt > signingKeySetMaxAgeMs) await this.reload();
    const signer = this.signer;
    if (signer === undefined) throw new UnavailableError("no active signing key");
    return signer;
  }

  /** The published key for a kid, reloading once (rate-limited) when it is not known. */
  async keyFor(kid: string): Promise<PublishedKey | undefined> {
    let key = this.usable(this.published.get(kid));
    if (key !== undefined) return key;
    if (this.loading) {
      await this.loading;
    } else if (this.deps.clock.now().getTime() - this.lastLoadAt >= unknownKidReloadMs) {
      try {
        await this.reload();
      } catch (error) {
        this.deps.logger.warn({ err: error }, "could not reload signing keys for an unknown kid");
        throw new UnavailableError("signing keys could not be loaded, retry later");
      }
    } else {
      return undefined;
    }
    key = this.usable(this.published.get(kid));
    return key;
  }

  private usable(key: PublishedKey | undefined): PublishedKey | undefined {
    if (key?.unpublishAfter != null && this.deps.clock.now().getTime() >= key.unpublishAfter) {
      return undefined;
    }
    return key;
  }

  /** The published public keys (next, active, and retired ones until unpublish_after). */
  async jwks(): Promise<{ keys: object[] }> {
    if (this.deps.clock.now().getTime() - this.lastLoadAt >= unknownKidReloadMs)
      await this.reload();
    const keys: object[] = [];
    for (const key of this.published.values()) {
      if (this.usable(key) === undefined) continue;
      keys.push({ ...key.publicJwk, kid: key.kid, alg: key.algorithm, use: "sig" });
    }
    return { keys };
  }
}
