/**
 * The matching rules of revocations, with no I/O: the service's RevocationState and the
 * verifier library (src/verify/) hold one each, fed from the database or from
 * WatchRevocations.
 */

export type RevocationKindName = "session" | "user" | "membership" | "workspace" | "signing_key";

/** One revocation (a row of migrations/015's feed). */
export interface Revocation {
  readonly kind: RevocationKindName;
  readonly workspaceId: string | null;
  readonly userId: string | null;
  readonly sessionId: string | null;
  /** The signing key of a "signing_key" revocation: every token it signed is dead. */
  readonly kid?: string | null;
  /** Tokens issued at or before this (ms; compared with iat in whole seconds) are dead. */
  readonly cutOffMs: number;
  /** After this no token the revocation concerns can still be valid. */
  readonly expireMs: number;
}

/** The claims of an access token that revocations are matched against. */
export interface RevocableToken {
  readonly userId: string;
  readonly workspaceId: string;
  readonly sessionId: string;
  readonly issuedAt: Date;
  /** The `kid` of the token's header. */
  readonly kid: string;
}

interface CutOff {
  cutOffMs: number;
  expireMs: number;
}

export class RevocationSet {
  private readonly sessions = new Map<string, number>();
  private readonly users = new Map<string, CutOff>();
  private readonly memberships = new Map<string, CutOff>();
  private readonly workspaces = new Map<string, number>();
  private readonly signingKeys = new Map<string, number>();

  apply(r: Revocation): void {
    switch (r.kind) {
      case "session":
        if (r.sessionId) keepLatest(this.sessions, r.sessionId, r.expireMs);
        break;
      case "workspace":
        if (r.workspaceId) keepLatest(this.workspaces, r.workspaceId, r.expireMs);
        break;
      case "user":
        if (r.userId) mergeCutOff(this.users, r.userId, r.cutOffMs, r.expireMs);
        break;
      case "membership":
        if (r.workspaceId && r.userId) {
          mergeCutOff(this.memberships, key(r.workspaceId, r.userId), r.cutOffMs, r.expireMs);
        }
        break;
      case "signing_key":
        if (r.kid) keepLatest(this.signingKeys, r.kid, r.expireMs);
        break;
    }
  }

  /** The kind of revocation that kills this token, or null when none does. */
  match(token: RevocableToken): RevocationKindName | null {
    if (this.signingKeys.has(token.kid)) return "signing_key";
    if (this.sessions.has(token.sessionId)) return "session";
    if (this.workspaces.has(token.workspaceId)) return "workspace";
    const iat = token.issuedAt.getTime();
    const user = this.users.get(token.userId);
    if (user && iat <= user.cutOffMs) return "user";
    const member = this.memberships.get(key(token.workspaceId, token.userId));
    return member !== undefined && iat <= member.cutOffMs ? "membership" : null;
  }

  /** Whether a revocation kills this token. */
  revokes(token: RevocableToken): boolean {
    return this.match(token) !== null;
  }

  /** The latest cut-off for the user's tokens in the workspace, or null. */
  cutOffFor(userId: string, workspaceId: string): number | null {
    const user = this.users.get(userId)?.cutOffMs ?? null;
    const member = this.memberships.get(key(workspaceId, userId))?.cutOffMs ?? null;
    if (user === null) return member;
    return member === null ? user : Math.max(user, member);
  }

  /** Forgets what concerns only tokens that expired by `nowMs`. */
  prune(nowMs: number): void {
    for (const map of [this.sessions, this.workspaces, this.signingKeys]) {
      for (const [k, expireMs] of map) if (expireMs <= nowMs) map.delete(k);
    }
    for (const map of [this.users, this.memberships]) {
      for (const [k, entry] of map) if (entry.expireMs <= nowMs) map.delete(k);
    }
  }

  clear(): void {
    for (const map of [
      this.sessions,
      this.workspaces,
      this.users,
      this.memberships,
      this.signingKeys,
    ]) {
      map.clear();
    }
  }

  get size(): number {
    return (
      this.sessions.size +
      this.users.size +
      this.memberships.size +
      this.workspaces.size +
      this.signingKeys.size
    );
  }
}

function key(workspaceId: string, userId: string): string {
  return `${workspaceId}/${userId}`;
}

function keepLatest(map: Map<string, number>, k: string, expireMs: number): void {
  map.set(k, Math.max(map.get(k) ?? 0, expireMs));
}

function mergeCutOff(map: Map<string, CutOff>, k: string, cutOffMs: number, expireMs: number) {
  const entry = map.get(k);
  map.set(k, {
    cutOffMs: Math.max(entry?.cutOffMs ?? 0, cutOffMs),
    expireMs: Math.max(entry?.expireMs ?? 0, expireMs),
  });
}
