import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Tokens } from "../../gen/keygate/v1/types_pb.js";

/** What the client keeps of a signed-in session. Plain JSON, so any store can hold it. */
export interface StoredTokens {
  readonly accessToken: string;
  /** Milliseconds since the epoch. */
  readonly accessTokenExpiresAt: number;
  readonly refreshToken: string;
  readonly refreshTokenExpiresAt: number;
  readonly sessionId: string;
  readonly userId: string;
  readonly workspaceId: string;
}

/**
 * Where the client keeps its tokens. Every read goes through `get`, so a store shared by
 * several clients (or backed by something outside the process) stays the one source of truth.
 */
export interface TokenStore {
  get(): StoredTokens | undefined | Promise<StoredTokens | undefined>;
  /** `undefined` signs out. */
  set(tokens: StoredTokens | undefined): void | Promise<void>;
}

/** The default store: a variable in this process (or page). */
export function memoryTokenStore(initial?: StoredTokens): TokenStore {
  let current = initial;
  return {
    get: () => current,
    set: (tokens) => {
      current = tokens;
    },
  };
}

/** The stored form of a Tokens message from Login, Refresh, VerifyOtp and the like. */
export function storedTokensOf(tokens: Tokens): StoredTokens {
  return {
    accessToken: tokens.accessToken,
    accessTokenExpiresAt: tokens.accessTokenExpireTime
      ? timestampMs(tokens.accessTokenExpireTime)
      : 0,
    refreshToken: tokens.refreshToken,
    refreshTokenExpiresAt: tokens.refreshTokenExpireTime
      ? timestampMs(tokens.refreshTokenExpireTime)
      : 0,
    sessionId: tokens.sessionId,
    userId: tokens.userId,
    workspaceId: tokens.workspaceId,
  };
}

/** Parses what a store wrote earlier; anything malformed reads as signed out. */
export function parseStoredTokens(text: string | null | undefined): StoredTokens | undefined {
  if (!text) return undefined;
  try {
    const value = JSON.parse(text) as Record<string, unknown>;
    const strings = ["accessToken", "refreshToken", "sessionId", "userId", "workspaceId"];
    const numbers = ["accessTokenExpiresAt", "refreshTokenExpiresAt"];
    if (
      typeof value === "object" &&
      value !== null &&
      strings.every((k) => typeof value[k] === "string") &&
      numbers.every((k) => typeof value[k] === "number")
    )
      return value as unknown as StoredTokens;
  } catch {
    // fall through: a corrupt entry is the same as none
  }
  return undefined;
}
