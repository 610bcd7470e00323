import { hash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { DatabasePool } from "slonik";
import type { Clock } from "../clock.js";
import { adminKeyMatches, adminKeyPrefix } from "../crypto/admin-key.js";
import { PermissionDeniedError, UnauthenticatedError } from "../errors.js";
import { findAdminKeyForAuthentication, touchAdminKey } from "../repositories/admin-keys.js";
import type { Role } from "../repositories/memberships.js";
import type { Amr } from "./amr.js";
import type { Principal } from "./deps.js";

/** Who calls AdminService or TokenIntrospectionService. */
export type Caller =
  | {
      readonly kind: "admin_key";
      readonly keyId: string;
      /** null: deployment-wide. */
      readonly workspaceId: string | null;
      readonly role: "read_only" | "admin";
      readonly introspect: boolean;
      /** The signed-in user who minted the key (or the key it came from); null for none. */
      readonly creatorUserId: string | null;
      /**
       * That user's current role in the key's workspace, which the key never exceeds; null
       * for keys no user minted.
       */
      readonly ceiling: Role | null;
    }
  | {
      readonly kind: "user";
      readonly userId: string;
      readonly workspaceId: string;
      readonly role: Role;
      readonly sessionId: string;
      readonly amr: readonly Amr[];
    };

/** How the audit log names the one who acted. */
export function actorOf(caller: Caller): string {
  return caller.kind === "admin_key" ? `admin_key:${caller.keyId}` : `user:${caller.userId}`;
}

/** Who made an admin change, for its audit event: the actor and, for a user, the session. */
export function auditedCaller(caller: Caller): { actor: string; sessionId: string | null } {
  return { actor: actorOf(caller), sessionId: caller.kind === "user" ? caller.sessionId : null };
}

const denied = (what: string) =>
  new PermissionDeniedError("PERMISSION_DENIED", `this caller may not ${what}`);

/**
 * Scopes, as the AdminService comments define them:
 * - workspace read: a key of that workspace or of the deployment (any role), or the
 *   workspace's owner or admin;
 * - workspace admin: an admin key of that workspace or of the deployment, or the workspace's
 *   owner or admin;
 * - deployment read / admin: a deployment-wide key (of any role / of role admin).
 */
export function requireWorkspaceRead(caller: Caller, workspaceId: string): void {
  if (caller.kind === "admin_key") {
    if (caller.workspaceId === null || caller.workspaceId === workspaceId) return;
  } else if (
    caller.workspaceId === workspaceId &&
    (caller.role === "owner" || caller.role === "admin")
  ) {
    return;
  }
  throw denied("read this workspace");
}

export function requireWorkspaceAdmin(caller: Caller, workspaceId: string): void {
  if (caller.kind === "admin_key") {
    if (
      caller.role === "admin" &&
      (caller.workspaceId === null || caller.workspaceId === workspaceId)
    )
      return;
  } else if (
    caller.workspaceId === workspaceId &&
    (caller.role === "owner" || caller.role === "admin")
  ) {
    return;
  }
  throw denied("administer this workspace");
}

/**
 * Owners are managed by owners: a signed-in admin may not grant the owner role, nor change or
 * remove an owner, and neither may a key an admin minted. Keys no user minted may.
 */
export function requireOwnerPower(caller: Caller): void {
  const role = caller.kind === "user" ? caller.role : caller.ceiling;
  if (role !== null && role !== "owner")
    throw new PermissionDeniedError("PERMISSION_DENIED", "only an owner may manage owners");
}

/**
 * Acting on a member or user whose role in the workspace is `role` (null: none, as for a
 * deployment-wide caller's view): an owner is acted on only with owner power.
 */
export function requirePowerOver(caller: Caller, role: Role | null): void {
  if (role === "owner") requireOwnerPower(caller);
}

export function requireDeploymentRead(caller: Caller): void {
  if (caller.kind === "admin_key" && caller.workspaceId === null) return;
  throw denied("read the whole deployment");
}

export function requireDeploymentAdmin(caller: Caller): void {
  if (caller.kind === "admin_key" && caller.workspaceId === null && caller.role === "admin") return;
  throw denied("administer the whole deployment");
}

export function requireIntrospect(caller: Caller): void {
  if (caller.kind === "admin_key" && caller.introspect) return;
  throw denied("introspect tokens");
}

/** The workspace a workspace-scoped caller is limited to, or null for deployment-wide keys. */
export function callerWorkspace(caller: Caller): string | null {
  return caller.kind === "admin_key" ? caller.workspaceId : caller.workspaceId;
}

/**
 * Authenticates an admin key: found by its visible prefix, compared in constant time against
 * its SHA-256, refused when revoked or expired, or when the user who minted it is no longer an
 * unblocked, active owner or admin of its workspace (SECURITY.md 32). Checked against the database on every call;
 * AdminKeyAuthenticator below keeps a success for a second.
 */
export async function authenticateAdminKey(
  pool: DatabasePool,
  clock: Clock,
  secret: string,
): Promise<Caller & { expiresAt: number | null }> {
  const invalid = () => new UnauthenticatedError("UNAUTHENTICATED", "invalid or revoked admin key");
  const prefix = adminKeyPrefix(secret);
  if (!prefix) throw invalid();
  const row = await findAdminKeyForAuthentication(pool, prefix);
  const now = clock.now().getTime();
  if (
    !row ||
    !adminKeyMatches(secret, row.secret_hash) ||
    row.revoked_at !== null ||
    (row.expires_at !== null && row.expires_at <= now) ||
    (row.created_by_user_id !== null &&
      row.creator_role !== "owner" &&
      row.creator_role !== "admin")
  ) {
    throw invalid();
  }
  // At most one write a minute per key.
  await touchAdminKey(pool, row.id, new Date(now));
  return {
    kind: "admin_key",
    keyId: row.id,
    workspaceId: row.workspace_id,
    role: row.role,
    introspect: row.introspect,
    creatorUserId: row.created_by_user_id,
    ceiling: row.created_by_user_id === null ? null : row.creator_role,
    expiresAt: row.expires_at,
  };
}

type Authenticated = Caller & { expiresAt: number | null };

/**
 * Admin-key authentication with successes kept for `ttlMs` (one second by default), keyed by
 * the SHA-256 of the whole key: a gateway that introspects thousands of tokens a second costs
 * one query a second, and a revoked key stops working on every instance within that second.
 * Concurrent calls with a key that is not cached share one lookup.
 */
export class AdminKeyAuthenticator {
  private readonly cache: LRUCache<string, Authenticated>;
  private readonly lookups = new Map<
    string,
    { promise: Promise<Authenticated>; generation: number }
  >();
  /** Keys that authenticated in the last ten minutes: their re-checks are not guesses. */
  private readonly known = new LRUCache<string, true>({ max: 10_000, ttl: 600_000 });
  /** Moves on every clear(): a lookup that started before it may predate a revocation. */
  private generation = 0;

  constructor(
    private readonly pool: DatabasePool,
    private readonly clock: Clock,
    ttlMs = 1_000,
  ) {
    this.cache = new LRUCache({ max: 10_000, ttl: ttlMs });
  }

  /**
   * `beforeLookup` runs, for each call, before the database is asked about a key that has not
   * authenticated lately (a limit on guessing keys; each caller pays its own, so one caller's
   * refusal is not another's); the once-a-second re-check of a key in use skips it.
   */
  async authenticate(secret: string, beforeLookup?: () => Promise<void>): Promise<Caller> {
    const key = hash("sha256", secret, "base64");
    let found = this.cache.get(key);
    if (!found) {
      if (!this.known.has(key)) await beforeLookup?.();
      found = await this.lookup(key, secret);
    }
    if (found.expiresAt !== null && found.expiresAt <= this.clock.now().getTime()) {
      this.cache.delete(key);
      throw new UnauthenticatedError("UNAUTHENTICATED", "invalid or revoked admin key");
    }
    const { expiresAt: _, ...caller } = found;
    return caller;
  }

  /** One database lookup per key at a time, started after the latest clear(). */
  private async lookup(key: string, secret: string): Promise<Authenticated> {
    for (;;) {
      let entry = this.lookups.get(key);
      if (!entry || entry.generation !== this.generation) {
        const started = {
          promise: authenticateAdminKey(this.pool, this.clock, secret),
          generation: this.generation,
        };
        this.lookups.set(key, started);
        started.promise
          .then(
            (f) => {
              if (started.generation !== this.generation) return;
              this.cache.set(key, f);
              this.known.set(key, true);
            },
            (error: unknown) => {
              // A refused key is a guess again; a database failure says nothing about it.
              if (error instanceof UnauthenticatedError) this.known.delete(key);
            },
          )
          .finally(() => {
            if (this.lookups.get(key) === started) this.lookups.delete(key);
          });
        entry = started;
      }
      const found = await entry.promise;
      // A revocation on this instance cleared the cache while the lookup ran: ask again.
      if (entry.generation === this.generation) return found;
    }
  }

  /** Forgets every cached key and lookup under way (after a revocation on this instance). */
  clear(): void {
    this.generation++;
    this.cache.clear();
    this.lookups.clear();
  }
}

/** A signed-in user as an admin caller (their role decides what they may do). */
export function callerFromPrincipal(p: Principal): Caller {
  return {
    kind: "user",
    userId: p.userId,
    workspaceId: p.workspaceId,
    role: p.role,
    sessionId: p.sessionId,
    amr: p.amr,
  };
}
