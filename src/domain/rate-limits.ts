import type { CommonQueryMethods, DatabasePool } from "slonik";
import type { Clock } from "../clock.js";
import type { RateLimitName, RateLimitRule, RateLimits, WorkspaceSettings } from "../config.js";
import { RateLimitedError } from "../errors.js";
import { sweepLoginFailures } from "../repositories/login-failures.js";
import { countRateLimitHits, sweepRateLimitWindows } from "../repositories/rate-limits.js";
import { ipBucket } from "./ip-bucket.js";

/** Limits whose subject is the client's IP address (counted by its bucket, see ip-bucket.ts). */
const perIp = (name: RateLimitName) => name.endsWith("_ip");

/**
 * The one limiter every public flow uses, stored in PostgreSQL so that it holds across
 * instances (migration 012 explains the sliding window, 024 the counting of several keys at
 * once). A hit is its own statement, outside the flow's transaction, so it counts even when
 * the flow then fails. Per-IP limits count the
 * client's bucket (an IPv6 /64, both loopbacks as one), and each per-workspace one also
 * counts against the deployment-wide `deployment_ip` budget, which no workspace can raise.
 */
export class RateLimiter {
  constructor(
    private readonly pool: DatabasePool,
    private readonly clock: Clock,
    private readonly defaults: RateLimits,
    private readonly options: { readonly ipv6PrefixLength: number } = { ipv6PrefixLength: 64 },
  ) {}

  /**
   * Counts one hit on each (limit, subject), in one statement and all or nothing (migration
   * 024): throws RESOURCE_EXHAUSTED, counting none of them, when one is full.
   */
  async hit(
    workspace: { id: string; settings: Pick<WorkspaceSettings, "rate_limits"> } | null,
    checks: readonly (readonly [RateLimitName, string])[],
  ): Promise<void> {
    const counts: { key: string; rule: RateLimitRule }[] = [];
    for (const [name, given] of checks) {
      const ip = perIp(name);
      const subject = ip ? ipBucket(given, this.options.ipv6PrefixLength) : given;
      const overrides: Partial<Record<RateLimitName, RateLimitRule>> | undefined =
        workspace?.settings.rate_limits;
      counts.push({
        key: `${name}:${workspace?.id ?? "-"}:${subject}`,
        rule: overrides?.[name] ?? this.defaults[name],
      });
      if (ip && workspace !== null) {
        counts.push({ key: `deployment_ip:-:${subject}`, rule: this.defaults.deployment_ip });
      }
    }
    if (counts.length === 0) return;
    // Rows are locked in key order, so that two calls naming the same keys cannot deadlock.
    counts.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const result = await countRateLimitHits(this.pool, {
      counts: counts.map((c) => ({
        key: c.key,
        limit: c.rule.limit,
        windowSeconds: c.rule.window_seconds,
      })),
      now: this.clock.now(),
    });
    if (!result.allowed) throw new RateLimitedError(result.retry_after_ms);
  }
}

/**
 * Deletes rate-limit rows whose window has passed and lockout rows that lock nothing any more
 * and were last touched a day ago. Safe on every instance at once; answers the rows removed.
 */
export async function sweepRateLimits(pool: CommonQueryMethods, now: Date): Promise<number> {
  return (await sweepRateLimitWindows(pool, now)) + (await sweepLoginFailures(pool, now));
}
