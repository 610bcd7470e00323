import type { DatabasePool } from "slonik";
import type { Clock } from "./clock.js";
import { tryAdvisoryXactLock } from "./db/advisory-locks.js";
import { sweepRateLimits } from "./domain/rate-limits.js";
import type { Logger } from "./log.js";
import { sweepExpiredOAuthCodes } from "./repositories/oauth-codes.js";
import { sweepExpiredOAuthInteractions } from "./repositories/oauth-interactions.js";
import { sweepFinishedLogouts } from "./repositories/oauth-logouts.js";
import { sweepExpiredCodes } from "./repositories/one-time-codes.js";
import { sweepSentMail } from "./repositories/outbox.js";
import { sweepExpiredPasskeyChallenges } from "./repositories/passkey-challenges.js";
import { sweepExpiredPendingLogins } from "./repositories/pending-logins.js";
import { deleteExpiredRevocations } from "./repositories/revocations.js";
import { sweepEndedSessions } from "./repositories/sessions.js";

// "kg-swp" in ASCII; distinct from the other advisory locks.
const sweepLockKey = "118129447433072";
/** Rows a sweep deletes from one table per round at most, so a backlog never holds locks long. */
const batch = 5_000;
const day = 86_400_000;

export interface SweepResult {
  readonly rateLimits: number;
  readonly codes: number;
  readonly pendingLogins: number;
  readonly passkeyChallenges: number;
  readonly sessions: number;
  readonly revocations: number;
  readonly sentMail: number;
  /** The provider's authorization requests, codes and logouts. */
  readonly oauth: number;
}

/**
 * Deletes what no longer means anything: rate-limit and lockout rows past their window,
 * one-time codes, pending second steps and passkey challenges a day after they expired, sessions a week after
 * they ended (their refresh tokens go by cascade), revocations an hour after the last token
 * they concern expired, delivered mail (its body is gone already) after a week, and the
provider's authorization requests and codes a day after they expired and its logouts a week
after they were delivered or given up. One
 * instance sweeps per round: the round holds a transaction-scoped advisory lock taken with
 * try, so the others skip it rather than repeat it. Answers null when another instance had it.
 */
export async function sweep(pool: DatabasePool, now: Date): Promise<SweepResult | null> {
  return pool.transaction(async (tx) => {
    if (!(await tryAdvisoryXactLock(tx, sweepLockKey))) return null;
    const ago = (ms: number) => new Date(now.getTime() - ms);
    const rateLimits = await sweepRateLimits(tx, now);
    const codes = await sweepExpiredCodes(tx, { before: ago(day), limit: batch });
    const pendingLogins = await sweepExpiredPendingLogins(tx, { before: ago(day), limit: batch });
    const passkeyChallenges = await sweepExpiredPasskeyChallenges(tx, {
      before: ago(day),
      limit: batch,
    });
    const sessions = await sweepEndedSessions(tx, { before: ago(7 * day), limit: batch });
    const revocations = await deleteExpiredRevocations(tx, new Date(now.getTime() - 3_600_000));
    const sentMail = await sweepSentMail(tx, { before: ago(7 * day), limit: batch });
    const oauth =
      (await sweepExpiredOAuthInteractions(tx, { before: ago(day), limit: batch })) +
      (await sweepExpiredOAuthCodes(tx, { before: ago(day), limit: batch })) +
      (await sweepFinishedLogouts(tx, { before: ago(7 * day), limit: batch }));
    return {
      rateLimits,
      codes,
      pendingLogins,
      passkeyChallenges,
      sessions,
      revocations,
      sentMail,
      oauth,
    };
  });
}

/**
 * Background upkeep on every instance, coordinated through PostgreSQL: the sweep (one
 * instance per round) and scheduled signing-key rotation (rotateIfDue decides under the
 * signing-keys lock, so one new key is published however many instances ask).
 */
export class Maintenance {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly options: {
      pool: DatabasePool;
      clock: Clock;
      logger: Logger;
      intervalMs: number;
      signingKeys: { rotateIfDue(maxAgeMs: number): Promise<unknown> };
      /** 0: rotate only when asked. */
      rotationMs: number;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.runOnce().finally(() => {
        this.running = undefined;
      });
    }, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  async runOnce(): Promise<void> {
    const { pool, clock, logger } = this.options;
    try {
      const swept = await sweep(pool, clock.now());
      if (swept && Object.values(swept).some((n) => n > 0)) logger.info({ swept }, "swept");
    } catch (error) {
      logger.warn({ err: error }, "sweep failed; retrying next round");
    }
    if (this.options.rotationMs > 0) {
      try {
        await this.options.signingKeys.rotateIfDue(this.options.rotationMs);
      } catch (error) {
        logger.warn({ err: error }, "scheduled signing-key rotation failed; retrying next round");
      }
    }
  }
}
