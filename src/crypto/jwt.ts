import { type CryptoKey, decodeProtectedHeader, errors, jwtVerify, SignJWT } from "jose";
import { z } from "zod";
import { UnauthenticatedError } from "../errors.js";
import { type JwtAlgorithm, jwtAlgorithms } from "./jwt-keys.js";

/**
 * The access tokens Keygate signs, as bytes (SECURITY.md 5): its own sessions', grants' and
 * clients' own; the OpenID Provider's ID tokens are in id-jwt.ts. Which key signs, and which keys a token may name, is the key ring's business
 * (src/domain/signing-keys.ts); this module only signs with the key it is given and checks a
 * token against the key the ring found for its kid.
 */

export type Role = "owner" | "admin" | "member";

export interface VerifiedAccessToken {
  userId: string;
  workspaceId: string;
  sessionId: string;
  role: Role;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
  kid: string;
  /** RFC 8176 methods; empty for tokens from before they were recorded. */
  amr: string[];
  /** The OAuth client the token was issued to (a grant of the OpenID Provider), or null. */
  clientId: string | null;
  /** The scopes granted to that client (RFC 9068 `scope`); empty otherwise. */
  scopes: string[];
  /** `iss`, and `aud` as a list. */
  issuer: string;
  audience: string[];
}

export type TokenInvalidCode =
  | "ERR_JWT_EXPIRED"
  | "ERR_JWT_INVALID"
  | "ERR_JWT_UNKNOWN_KEY"
  | "ERR_JWT_CLAIM_INVALID";

/** Every reason an access token is refused. The message never contains the token. */
export class TokenInvalidError extends UnauthenticatedError {
  readonly code: TokenInvalidCode;
  constructor(code: TokenInvalidCode, message: string) {
    super("UNAUTHENTICATED", message);
    this.code = code;
  }
}

/** The private half of the key that signs, with the header members that name it. */
export interface JwtSigner {
  readonly kid: string;
  readonly algorithm: JwtAlgorithm;
  readonly key: CryptoKey;
}

/** A published public key, as a token's kid finds it. */
export interface JwtVerifyKey {
  readonly algorithm: JwtAlgorithm;
  readonly verifyKey: CryptoKey;
}

/** What a token's header says about the key that signed it, read before any key lookup. */
export interface JwtKeyHint {
  readonly alg: string;
  readonly kid: string;
}

const tokenType = "at+jwt";
/** The only header members Keygate writes. Anything else (jku, x5u, jwk, x5c, crit, b64…) is refused. */
const headerMembers = new Set(["alg", "kid", "typ"]);
export const maxTokenLength = 8192;

const id = z.string().min(1).max(200);
/** iss and aud, which jose has checked; kept for whoever reports them (RFC 7662). */
const envelope = {
  iss: z.string(),
  aud: z.union([z.string(), z.array(z.string())]).transform((a) => (Array.isArray(a) ? a : [a])),
};
const claims = z.object({
  ...envelope,
  sub: id,
  workspace_id: id,
  sid: id,
  role: z.enum(["owner", "admin", "member"]),
  jti: id,
  iat: z.number().int(),
  exp: z.number().int(),
  // Absent from tokens signed before sessions recorded how they were signed in.
  amr: z.array(z.string().max(16)).max(8).optional(),
  // Only in tokens of a grant of the OpenID Provider (RFC 9068 section 2.2).
  client_id: id.optional(),
  scope: z.string().max(1000).optional(),
});
const requiredClaims = ["iss", "aud", "sub", "workspace_id", "sid", "role", "jti", "iat", "exp"];

/** What an access token says about its holder. */
export interface AccessTokenClaims {
  userId: string;
  workspaceId: string;
  sessionId: string;
  role: Role;
  /** RFC 8176 methods of the session, and the acr that follows from them (none, "1"). */
  amr?: readonly string[];
  acr?: string;
  /** A grant's client and scopes (RFC 9068); absent for Keygate's own sessions. */
  clientId?: string | null;
  scopes?: readonly string[] | null;
  /** A grant's RFC 8707 resources: its audience instead of the workspace's provider. */
  resources?: readonly string[] | null;
}

export function signAccessJwt(
  signer: JwtSigner,
  input: AccessTokenClaims & TokenEnvelope,
): Promise<string> {
  return signTokenJwt(signer, input.userId, input, {
    workspace_id: input.workspaceId,
    sid: input.sessionId,
    role: input.role,
    amr: [...(input.amr ?? [])],
    acr: input.acr ?? "1",
    ...(input.clientId ? { client_id: input.clientId, scope: (input.scopes ?? []).join(" ") } : {}),
  });
}

/** What every access token carries around its holder's claims. */
export interface TokenEnvelope {
  issuer: string;
  audience: string | string[];
  jti: string;
  /** Epoch seconds. */
  issuedAt: number;
  expiresAt: number;
}

/** An access token (typ at+jwt, RFC 9068) for `subject` with `claims` in `envelope`. */
function signTokenJwt(
  signer: JwtSigner,
  subject: string,
  envelope: TokenEnvelope,
  claims: Record<string, unknown>,
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: signer.algorithm, kid: signer.kid, typ: tokenType })
    .setIssuer(envelope.issuer)
    .setAudience(envelope.audience)
    .setSubject(subject)
    .setJti(envelope.jti)
    .setIssuedAt(envelope.issuedAt)
    .setExpirationTime(envelope.expiresAt)
    .sign(signer.key);
}

/**
 * The alg and kid of something that claims to be an access token, or a TokenInvalidError.
 * Everything the header alone can refuse is refused here, before the key ring looks the kid
 * up, so that garbage never causes a reload.
 */
export function accessTokenKeyHint(token: string): JwtKeyHint {
  if (typeof token !== "string" || token.length === 0 || token.length > maxTokenLength) {
    throw new TokenInvalidError("ERR_JWT_INVALID", "malformed access token");
  }
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw new TokenInvalidError("ERR_JWT_INVALID", "malformed access token");
  }
  for (const member of Object.keys(header)) {
    if (!headerMembers.has(member)) {
      throw new TokenInvalidError("ERR_JWT_INVALID", `header member "${member}" is not accepted`);
    }
  }
  const alg = header.alg;
  if (typeof alg !== "string" || !jwtAlgorithms.includes(alg as JwtAlgorithm)) {
    throw new TokenInvalidError("ERR_JWT_INVALID", "algorithm not accepted");
  }
  if (header.typ !== tokenType) {
    throw new TokenInvalidError("ERR_JWT_INVALID", "not an access token");
  }
  const kid = header.kid;
  if (typeof kid !== "string" || kid.length === 0 || kid.length > 100) {
    throw new TokenInvalidError("ERR_JWT_INVALID", "missing or malformed kid");
  }
  return { alg, kid };
}

/** Checks an access token against the key its kid found; every refusal is a TokenInvalidError. */
export async function verifyAccessJwt(
  token: string,
  hint: JwtKeyHint,
  key: JwtVerifyKey,
  options: { issuer: string; audience: string; currentDate: Date },
): Promise<VerifiedAccessToken> {
  const c = await checkedClaims(token, hint, key, options, requiredClaims, claims);
  return {
    userId: c.sub,
    workspaceId: c.workspace_id,
    sessionId: c.sid,
    role: c.role,
    jti: c.jti,
    issuedAt: new Date(c.iat * 1000),
    expiresAt: new Date(c.exp * 1000),
    kid: hint.kid,
    amr: c.amr ?? [],
    clientId: c.client_id ?? null,
    scopes: c.scope === undefined || c.scope === "" ? [] : c.scope.split(" "),
    issuer: c.iss,
    audience: c.aud,
  };
}

/** A client's own access token (client_credentials), checked. */
export interface VerifiedClientAccessToken {
  clientId: string;
  workspaceId: string;
  /** The token's sid: the client's machine_session_id when it was issued. */
  machineSessionId: string;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
  kid: string;
  /** `iss`, and `aud` as a list: the workspace's provider, or the resources it was asked for. */
  issuer: string;
  audience: string[];
  scopes: string[];
}

/** A client's own token (client_credentials): no user, so no role; `role` must be absent. */
const clientClaims = z.object({
  ...envelope,
  sub: id,
  client_id: id,
  workspace_id: id,
  sid: id,
  role: z.never().optional(),
  jti: id,
  iat: z.number().int(),
  exp: z.number().int(),
  scope: z.string().max(1000),
});
const clientRequiredClaims = [
  "iss",
  "aud",
  "sub",
  "client_id",
  "workspace_id",
  "sid",
  "scope",
  "jti",
  "iat",
  "exp",
];

/**
 * Signs a client's own access token (client_credentials, RFC 9068 section 2.2): `sub` is the
 * client, there is no user, role, amr or acr, and `sid` is the client's machine_session_id,
 * which its revocation names.
 */
export function signClientJwt(
  signer: JwtSigner,
  input: {
    clientId: string;
    workspaceId: string;
    machineSessionId: string;
    scopes: readonly string[];
  } & TokenEnvelope,
): Promise<string> {
  return signTokenJwt(signer, input.clientId, input, {
    workspace_id: input.workspaceId,
    sid: input.machineSessionId,
    client_id: input.clientId,
    scope: input.scopes.join(" "),
  });
}

/**
 * Checks a client's own access token against the key its kid found: the same header, key,
 * issuer and expiry checks as verifyAccessJwt, `sub` equal to `client_id` and no `role`, so
 * that no user's token passes as a client's and no client's as a user's (verifyAccessJwt
 * requires `role`).
 */
export async function verifyClientJwt(
  token: string,
  hint: JwtKeyHint,
  key: JwtVerifyKey,
  options: { issuer: string; audience: string; workspaceId: string; currentDate: Date },
): Promise<VerifiedClientAccessToken> {
  const c = await checkedClaims(token, hint, key, options, clientRequiredClaims, clientClaims);
  if (c.sub !== c.client_id || c.workspace_id !== options.workspaceId) {
    throw new TokenInvalidError("ERR_JWT_CLAIM_INVALID", 'claim "sub" is invalid');
  }
  return {
    clientId: c.client_id,
    workspaceId: c.workspace_id,
    machineSessionId: c.sid,
    jti: c.jti,
    issuedAt: new Date(c.iat * 1000),
    expiresAt: new Date(c.exp * 1000),
    kid: hint.kid,
    issuer: c.iss,
    audience: c.aud,
    scopes: c.scope === "" ? [] : c.scope.split(" "),
  };
}

/**
 * The claims of an access token, checked: the key matches the header's algorithm, jose
 * verifies signature, issuer, audience, typ, expiry and the registered claims, and `schema`
 * the rest. Every refusal is a TokenInvalidError.
 */
async function checkedClaims<T>(
  token: string,
  hint: JwtKeyHint,
  key: JwtVerifyKey,
  options: { issuer: string; audience: string; currentDate: Date },
  required: readonly string[],
  schema: z.ZodType<T>,
): Promise<T> {
  if (hint.alg !== key.algorithm) {
    throw new TokenInvalidError("ERR_JWT_INVALID", "algorithm does not match the key");
  }
  let payload: unknown;
  try {
    ({ payload } = await jwtVerify(token, key.verifyKey, {
      algorithms: [key.algorithm],
      issuer: options.issuer,
      audience: options.audience,
      typ: tokenType,
      currentDate: options.currentDate,
      requiredClaims: [...required],
    }));
  } catch (error) {
    throw fromJose(error);
  }
  const parsed = schema.safeParse(payload);
  if (!parsed.success) {
    const claim = parsed.error.issues[0]?.path[0];
    throw new TokenInvalidError("ERR_JWT_CLAIM_INVALID", `claim "${String(claim)}" is invalid`);
  }
  return parsed.data;
}

function fromJose(error: unknown): TokenInvalidError {
  if (error instanceof errors.JWTExpired) {
    return new TokenInvalidError("ERR_JWT_EXPIRED", "access token expired");
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    return new TokenInvalidError("ERR_JWT_CLAIM_INVALID", `claim "${error.claim}" is invalid`);
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return new TokenInvalidError("ERR_JWT_INVALID", "signature verification failed");
  }
  return new TokenInvalidError("ERR_JWT_INVALID", "malformed access token");
}
