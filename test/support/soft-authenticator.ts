import {
  createHash,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign as signData,
} from "node:crypto";

/**
 * A software WebAuthn authenticator for Node-side tests: ES256 keys from node:crypto,
 * attestation "none", discoverable credentials, and a CBOR encoder of just what WebAuthn
 * needs (unsigned and negative integers, byte and text strings, arrays, maps). Every field
 * the server checks can be bent per call: origin, RP ID, flags, counter, challenge.
 */

type Cbor = number | string | Uint8Array | Cbor[] | Map<Cbor, Cbor> | { [k: string]: Cbor };

function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
  if (n < 0x10000) {
    const b = Buffer.alloc(3);
    b[0] = (major << 5) | 25;
    b.writeUInt16BE(n, 1);
    return b;
  }
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

export function cbor(value: Cbor): Buffer {
  if (typeof value === "number") return value >= 0 ? head(0, value) : head(1, -1 - value);
  if (typeof value === "string") {
    const bytes = Buffer.from(value, "utf8");
    return Buffer.concat([head(3, bytes.length), bytes]);
  }
  if (value instanceof Uint8Array) return Buffer.concat([head(2, value.length), value]);
  if (Array.isArray(value)) return Buffer.concat([head(4, value.length), ...value.map(cbor)]);
  const entries = value instanceof Map ? [...value.entries()] : Object.entries(value);
  return Buffer.concat([
    head(5, entries.length),
    ...entries.flatMap(([k, v]) => [cbor(k), cbor(v)]),
  ]);
}

const sha256 = (data: Uint8Array | string) => createHash("sha256").update(data).digest();
const b64 = (data: Uint8Array) => Buffer.from(data).toString("base64url");

export interface SoftCredential {
  readonly id: Buffer;
  readonly rpId: string;
  readonly userHandle: Buffer;
  readonly privateKey: KeyObject;
  counter: number;
  backedUp: boolean;
}

export interface Bend {
  origin?: string;
  rpId?: string;
  challenge?: string;
  /** User verification flag (UV). */
  uv?: boolean;
  /** The counter to report; otherwise the stored one plus one. */
  counter?: number;
  type?: string;
  /** Sign with another credential's key (a forged signature). */
  signWith?: KeyObject;
  /** Registration: this COSE key instead of the credential's own (unusable keys). */
  coseKey?: Map<Cbor, Cbor>;
  /** Registration: this credential id (another member's, say). */
  credentialId?: Buffer;
  /** Registration: this id in the JSON, whatever authenticatorData names. */
  jsonId?: string;
}

type CreationOptions = {
  challenge: string;
  rp: { id?: string; name?: string };
  user: { id: string; name: string };
  excludeCredentials?: { id: string }[];
};
type RequestOptions = {
  challenge: string;
  rpId?: string;
  allowCredentials?: { id: string }[];
};

export class SoftAuthenticator {
  readonly credentials: SoftCredential[] = [];
  constructor(
    readonly origin: string,
    readonly options: { backedUp?: boolean; uv?: boolean; counterStep?: number } = {},
  ) {}

  private flags(bend: Bend, cred: { backedUp: boolean }, attested: boolean): number {
    let f = 0x01; // UP
    if (bend.uv ?? this.options.uv ?? true) f |= 0x04;
    if (cred.backedUp) f |= 0x08 | 0x10; // BE, BS
    if (attested) f |= 0x40;
    return f;
  }

  private clientData(type: string, challenge: string, bend: Bend): Buffer {
    return Buffer.from(
      JSON.stringify({
        type: bend.type ?? type,
        challenge: bend.challenge ?? challenge,
        origin: bend.origin ?? this.origin,
        crossOrigin: false,
      }),
    );
  }

  /** navigator.credentials.create() with the server's options, as RegistrationResponseJSON. */
  register(options: CreationOptions, bend: Bend = {}) {
    const rpId = bend.rpId ?? options.rp.id ?? new URL(this.origin).hostname;
    const excluded = new Set((options.excludeCredentials ?? []).map((c) => c.id));
    if (this.credentials.some((c) => c.rpId === rpId && excluded.has(b64(c.id))))
      throw new Error("InvalidStateError: an excluded credential is on this authenticator");
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = publicKey.export({ format: "jwk" });
    const cose = cbor(
      bend.coseKey ??
        new Map<Cbor, Cbor>([
          [1, 2],
          [3, -7],
          [-1, 1],
          [-2, Buffer.from(jwk.x as string, "base64url")],
          [-3, Buffer.from(jwk.y as string, "base64url")],
        ]),
    );
    const cred: SoftCredential = {
      id: bend.credentialId ?? randomBytes(32),
      rpId,
      userHandle: Buffer.from(options.user.id, "base64url"),
      privateKey,
      counter: bend.counter ?? 0,
      backedUp: this.options.backedUp ?? false,
    };
    const counter = Buffer.alloc(4);
    counter.writeUInt32BE(cred.counter);
    const idLength = Buffer.alloc(2);
    idLength.writeUInt16BE(cred.id.length);
    const authData = Buffer.concat([
      sha256(rpId),
      Buffer.from([this.flags(bend, cred, true)]),
      counter,
      Buffer.alloc(16), // AAGUID: none
      idLength,
      cred.id,
      cose,
    ]);
    const attestationObject = cbor({ fmt: "none", attStmt: {}, authData });
    // Discoverable: a new credential for the same user handle replaces the old one.
    const same = this.credentials.findIndex(
      (c) => c.rpId === rpId && c.userHandle.equals(cred.userHandle),
    );
    if (same >= 0) this.credentials.splice(same, 1);
    this.credentials.push(cred);
    return {
      credential: cred,
      json: {
        id: bend.jsonId ?? b64(cred.id),
        rawId: bend.jsonId ?? b64(cred.id),
        type: "public-key",
        clientExtensionResults: {},
        authenticatorAttachment: "platform",
        response: {
          clientDataJSON: b64(this.clientData("webauthn.create", options.challenge, bend)),
          attestationObject: b64(attestationObject),
          transports: ["internal"],
        },
      },
    };
  }

  /** navigator.credentials.get(): the first allowed (or discoverable) credential signs. */
  assert(options: RequestOptions, bend: Bend = {}, pick?: SoftCredential) {
    const rpId = bend.rpId ?? options.rpId ?? new URL(this.origin).hostname;
    const allowed = new Set((options.allowCredentials ?? []).map((c) => c.id));
    const cred =
      pick ??
      this.credentials.find(
        (c) => c.rpId === (options.rpId ?? rpId) && (allowed.size === 0 || allowed.has(b64(c.id))),
      );
    if (!cred) throw new Error("NotAllowedError: no credential for this RP");
    const next = bend.counter ?? cred.counter + (this.options.counterStep ?? 1);
    if (bend.counter === undefined) cred.counter = next;
    const counter = Buffer.alloc(4);
    counter.writeUInt32BE(next);
    const authData = Buffer.concat([
      sha256(rpId),
      Buffer.from([this.flags(bend, cred, false)]),
      counter,
    ]);
    const clientDataJSON = this.clientData("webauthn.get", options.challenge, bend);
    const signature = signData(
      "sha256",
      Buffer.concat([authData, sha256(clientDataJSON)]),
      bend.signWith ?? cred.privateKey,
    );
    return {
      id: b64(cred.id),
      rawId: b64(cred.id),
      type: "public-key",
      clientExtensionResults: {},
      authenticatorAttachment: "platform",
      response: {
        clientDataJSON: b64(clientDataJSON),
        authenticatorData: b64(authData),
        signature: b64(signature),
        userHandle: b64(cred.userHandle),
      },
    };
  }
}
