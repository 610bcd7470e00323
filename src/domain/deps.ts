import type { DatabasePool, DatabaseTransactionConnection } from "slonik";
import type { Clock } from "../clock.js";
import type { RateLimitName, WorkspaceSettings } from "../config.js";
import type { VerifiedAccessToken } from "../crypto/jwt.js";
import type { Logger } from "../log.js";
import type { Role } from "../repositories/memberships.js";
import type { Amr } from "./amr.js";
import type { SigningKeys } from "./signing-keys.js";

/** What the auth flows need from the outside, as narrow ports. */
export interface AuthDeps {
  readonly pool: DatabasePool;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly tokenSecret: Buffer;
  /** Seals authenticator-app secrets at rest, bound to their membership. */
  readonly totpSecrets: {
    seal(secret: Buffer, member: { workspaceId: string; userId: string }): Buffer;
    /** Throws for a value sealed for another membership, or altered. */
    open(sealed: Uint8Array, member: { workspaceId: string; userId: string }): Buffer;
  };
  readonly hasher: {
    hash(password: string): Promise<string>;
    verify(password: string, stored: string | null): Promise<{ ok: boolean; needsRehash: boolean }>;
  };
  readonly policy: { check(password: string, opts: { minLength: number; field?: string }): void };
  readonly tokens: {
    signAccessToken(input: {
      userId: string;
      workspaceId: string;
      sessionId: string;
      role: Role;
      amr: readonly string[];
      acr: string;
      clientId?: string | null;
      scopes?: readonly string[] | null;
      /** A grant's RFC 8707 resources: the token's audience instead of the provider. */
      resources?: readonly string[] | null;
      ttlSeconds: number;
      /** The token's iat must be later than this (in whole seconds). */
      issuedAfter?: Date;
      /** The token's iat, instead of now (in whole seconds). */
      issuedAt?: Date;
    }): Promise<{ token: string; jti: string; issuedAt: Date; expiresAt: Date }>;
    /** A client's own token (client_credentials): no user; see SigningKeys. */
    signClientAccessToken(input: {
      clientId: string;
      workspaceId: string;
      machineSessionId: string;
      scopes: readonly string[];
      /** RFC 8707: the token's audience instead of the workspace's provider. */
      resources?: readonly string[];
      ttlSeconds: number;
    }): Promise<{ token: string; jti: string; issuedAt: Date; expiresAt: Date }>;
    /** A grant's tokens are checked against their workspace's issuer, as iss and aud. */
    verifyAccessToken(
      token: string,
      options?: { provider?: string },
    ): Promise<Omit<VerifiedAccessToken, "kid">>;
  };
  readonly mail: {
    enqueue(
      tx: DatabaseTransactionConnection,
      input: {
        workspaceId: string | null;
        to: string;
        template: MailTemplateName;
        vars: Record<string, string>;
      },
    ): Promise<void>;
    /** After a commit that enqueued mail: send without waiting for the next poll. */
    wake(): void;
  };
  /** The in-memory revocation state (src/domain/revocations.ts). */
  readonly revocations: {
    /** After a commit that may have revoked something: apply it here before answering. */
    changed(): Promise<void>;
    cutOffFor(userId: string, workspaceId: string): number | null;
  };
  /** Rate limits (RESOURCE_EXHAUSTED with the retry delay when one is full). */
  readonly limiter: {
    hit(
      workspace: { id: string; settings: Pick<WorkspaceSettings, "rate_limits"> } | null,
      checks: readonly (readonly [RateLimitName, string])[],
    ): Promise<void>;
  };
  /** Failed-login lockout per subject (see guessSubject). */
  readonly lockout: {
    reserve(subject: string): Promise<void>;
    clear(subject: string): Promise<void>;
  };
  readonly settings: {
    readonly workspaceDefaults: WorkspaceSettings;
    readonly allowWorkspaceCreation: boolean;
    readonly refreshGraceSeconds: number;
    /** Base URL of the app; links in emails are built from it, never from request headers. */
    readonly publicUrl: string;
    readonly productName: string;
    /** Passkeys: the relying party's ID and accepted origins, from configuration only. */
    readonly webauthn: { readonly rpId: string; readonly origins: readonly string[] };
    /** Longest lifetime of an admin key minted by a signed-in user (or by such a key). */
    readonly adminKeyMaxLifetimeDays: number;
  };
}

export type MailTemplateName =
  | "verify_email_code"
  | "verify_email_link"
  | "password_reset_code"
  | "password_reset_link"
  | "magic_link"
  | "login_code"
  | "action_code"
  | "password_changed"
  | "signup_existing_account"
  | "invitation"
  | "factor_changed";

/** Who made the call and from where, for sessions and the audit log. */
export interface RequestMeta {
  readonly requestId: string;
  readonly ipAddress: string | null;
  readonly userAgent: string | null;
  /** The x-workspace-id header, when sent. */
  readonly workspaceHeader: string | null;
}

/** The signed-in caller, after the access token and its session checked out. */
export interface Principal {
  readonly userId: string;
  readonly workspaceId: string;
  readonly sessionId: string;
  readonly role: Role;
  /** How the session was signed in (the access token's amr claim). */
  readonly amr: readonly Amr[];
}

/** AdminService needs the auth ports and the signing keys (rotation, listing). */
export interface AdminDeps extends AuthDeps {
  readonly signingKeys: SigningKeys;
  /** The key ring of the OpenID Provider's ID tokens (RS256). */
  readonly idTokenKeys?: SigningKeys;
  /** Admin-key authentication, whose short-lived cache a key revocation clears. */
  readonly adminKeys: { clear(): void };
}
