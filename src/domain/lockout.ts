import type { DatabasePool } from "slonik";
import { z } from "zod";
import type { Clock } from "../clock.js";
import { sql } from "../db/sql.js";
import { normalizeEmail } from "../repositories/users.js";
import { RateLimitedError } from "./errors.js";

export interface LockoutPolicy {
  /** Failed logins in a row that lock the address. */
  readonly threshold: number;
  /** The first lockout's length; each further one in a row doubles, up to maxSeconds. */
  readonly baseSeconds: number;
  readonly maxSeconds: number;
}

const stateRow = z.object({
  failed_count: z.number(),
  lockouts: z.number(),
  locked_until: z.number().nullable(),
});
export type LockoutState = z.infer<typeof stateRow>;

/**
 * Temporary lockout after repeated failed logins, per address (case-folded) whether or not
 * an account has it (SECURITY.md 19). Attempts during a lockout are refused before any
 * password work and do not extend it; a success clears the state.
 */
export class Lockout {
  constructor(
    private readonly pool: DatabasePool,
    private readonly clock: Clock,
    private readonly policy: LockoutPolicy,
  ) {}

  async state(email: string): Promise<LockoutState | null> {
    return this.pool.maybeOne(sql.type(stateRow)`
      SELECT failed_count, lockouts, locked_until FROM login_failures
      WHERE email_normalized = ${normalizeEmail(email)}`);
  }

  /** Throws RESOURCE_EXHAUSTED (ACCOUNT_LOCKED) with the time left while the address is locked. */
  async assertNotLocked(email: string): Promise<void> {
    const state = await this.state(email);
    const left = (state?.locked_until ?? 0) - this.clock.now().getTime();
    if (left > 0) {
      throw new RateLimitedError(left, "ACCOUNT_LOCKED", "too many failed logins; try again later");
    }
  }

  async recordFailure(email: string): Promise<void> {
    const now = sql.timestamp(this.clock.now());
    const address = normalizeEmail(email);
    const { threshold, baseSeconds, maxSeconds } = this.policy;
    await this.pool.query(sql.unsafe`
      INSERT INTO login_failures (email_normalized, updated_at) VALUES (${address}, ${now})
      ON CONFLICT (email_normalized) DO NOTHING`);
    await this.pool.query(sql.unsafe`
      UPDATE login_failures SET
        failed_count = CASE WHEN failed_count + 1 >= ${threshold} THEN 0 ELSE failed_count + 1 END,
        lockouts = CASE WHEN failed_count + 1 >= ${threshold} THEN lockouts + 1 ELSE lockouts END,
        locked_until = CASE WHEN failed_count + 1 >= ${threshold}
          THEN ${now}::timestamptz + make_interval(secs => least(${maxSeconds}, ${baseSeconds} * power(2, least(lockouts, 30))))
          ELSE locked_until END,
        updated_at = ${now}
      WHERE email_normalized = ${address}`);
  }

  async clear(email: string): Promise<void> {
    await this.pool.query(
      sql.unsafe`DELETE FROM login_failures WHERE email_normalized = ${normalizeEmail(email)}`,
    );
  }
}
