/** What keygate/verify takes and answers: its options, the caller it verifies, its refusals. */

/** Why `verify` refused a token. */
export type VerifyErrorReason =
  | "invalid"
  | "expired"
  | "revoked"
  | "workspace_mismatch"
  | "membership_inactive"
  | "mfa_required"
  | "stale";

export class VerifyError extends Error {
  constructor(
    readonly reason: VerifyErrorReason,
    message: string,
  ) {
    super(message);
    this.name = "VerifyError";
  }
}

/** The user behind a verified access token. */
export interface VerifiedCaller {
  readonly kind: "user";
  readonly userId: string;
  readonly workspaceId: string;
  readonly sessionId: string;
  readonly role: "owner" | "admin" | "member";
  readonly expiresAt: Date;
  /**
   * How the user signed in, RFC 8176 values ("pwd", "otp", "hwk", "swk", "email", "mfa");
   * empty for tokens from before Keygate recorded it.
   */
  readonly amr: readonly string[];
  /** "1" (one factor), "2" (two) or "phr" (two, one of them a passkey). */
  readonly acr: string;
  /**
   * For a verifier with a `resource`: the OAuth client the user granted access to, and the
   * scopes granted. Absent for Keygate's own sessions' tokens.
   */
  readonly clientId?: string;
  readonly scopes?: readonly string[];
}

/**
 * An OAuth client calling with its own token (client_credentials with this verifier's
 * resource): no user, session, role or factors. Only `verifyUserOrClient` and the middlewares
 * with `clients: true` answer one.
 */
export interface VerifiedClient {
  readonly kind: "client";
  readonly clientId: string;
  readonly workspaceId: string;
  /** The scopes the client was granted, from those registered for it. */
  readonly scopes: readonly string[];
  readonly expiresAt: Date;
}

/** Per call: pin a workspace, or ask for a token signed in with two factors. */
export interface VerifyOptions {
  readonly workspaceId?: string | undefined;
  /** Refuse a token without amr "mfa" (`mfa_required`); by default the verifier's option. */
  readonly requireMfa?: boolean | undefined;
}

export interface VerifierOptions {
  /** Keygate's URL (any instance, or the load balancer in front of them). */
  readonly baseUrl: string;
  /**
   * An admin key with the introspect permission. A workspace-scoped one pins the verifier to
   * its workspace: tokens of any other workspace are refused (`workspace_mismatch`).
   */
  readonly adminKey: string;
  /** Accept only this workspace's tokens (for a deployment-wide key). */
  readonly workspaceId?: string;
  /** Accept only tokens signed in with two factors (amr "mfa"); false by default. */
  readonly requireMfa?: boolean;
  /**
   * KEYGATE_AUDIENCE of the deployment: the verifier takes Keygate's own sessions' tokens.
   * Leave it out with `resource`.
   */
  readonly audience?: string;
  /**
   * This service's RFC 8707 resource identifier (its URL, as clients name it): the verifier
   * takes the access tokens the workspace's OpenID Provider granted OAuth clients for this
   * resource (`aud` includes it, `iss` is the workspace's issuer), and nothing else. Needs
   * `workspaceId`.
   */
  readonly resource?: string;
  /** KEYGATE_ISSUER of the deployment; by default the origin of baseUrl. */
  readonly issuer?: string;
  /** How the verifier talks to Keygate; "grpc" by default. */
  readonly transport?: "grpc" | "connect";
  /** Accepted signing algorithms; by default the three Keygate signs with. */
  readonly algorithms?: readonly ("RS256" | "ES256" | "EdDSA")[];
  /** The feed counts as down after this long without a message (5 s by default). */
  readonly staleAfterMs?: number;
  /** While the feed is down: refuse with `stale` (default) or ask Introspect for each token. */
  readonly whenStale?: "fail" | "introspect";
  /** How long an Introspect answer is reused while the feed is down (1 s by default). */
  readonly introspectCacheMs?: number;
  /** Called on feed problems, for the service's logs. */
  readonly onFeedError?: (error: unknown) => void;
}
