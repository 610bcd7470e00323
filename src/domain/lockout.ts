import type { DatabasePool } from "slonik";
import type { Clock } from "../clock.js";
import { RateLimitedError } from "../errors.js";
import { clearLoginFailures, reserveLoginAttempt } from "../repositories/login-failures.js";
import { normalizeEmail } from "../repositories/users.js";

export interface LockoutPolicy {
  /** Failed logins in a row that lock the address. */
  readonly threshold: number;
  /** The first lockout's length; each further one in a row doubles, up to maxSeconds. */
  readonly baseSeconds: number;
  readonly maxSeconds: number;
}

/**
 * What failed logins are counted against (migration 016): the account's address when the
 * attempt is at a workspace where it is an active member, the workspace and address when it
 * is not (or the address has no account), so that guessing there locks nothing elsewhere.
 */
export function guessSubject(email: string, workspaceId: string | null): string {
  const address = normalizeEmail(email);
  return workspaceId === null ? address : `${workspaceId}:${address}`;
}

/**
 * Temporary lockout after repeated failed logins (SECURITY.md 19, 33). Each attempt is
 * reserved as a failure before its password is checked, atomically, so concurrent guesses get
 * at most the threshold of real checks; attempts during a lockout are refused before any
 * password work and do not extend it; a success clears the count.
 */
export class Lockout {
  constructor(
    private readonly pool: DatabasePool,
    private readonly clock: Clock,
    private readonly policy: LockoutPolicy,
  ) {}

  /** Counts an attempt, or throws RESOURCE_EXHAUSTED (ACCOUNT_LOCKED) with the time left. */
  async reserve(subject: string): Promise<void> {
    const { threshold, baseSeconds, maxSeconds } = this.policy;
    const result = await reserveLoginAttempt(this.pool, {
      subject,
      threshold,
      baseSeconds,
      maxSeconds,
      now: this.clock.now(),
    });
    if (!result.allowed) {
      throw new RateLimitedError(
        result.retry_after_ms,
        "ACCOUNT_LOCKED",
        "too many failed logins; try again later",
      );
    }
  }

  /** After a success: the reserved attempt and the failures before it are forgotten. */
  async clear(subject: string): Promise<void> {
    await clearLoginFailures(this.pool, subject);
  }
}
