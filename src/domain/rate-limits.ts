import type { CommonQueryMethods, DatabasePool } from "slonik";
import { z } from "zod";
import type { Clock } from "../clock.js";
import type { RateLimitName, RateLimitRule, RateLimits, WorkspaceSettings } from "../config.js";
import { sql } from "../db/sql.js";
import { RateLimitedError } from "./errors.js";
import { ipBucket } from "./ip-bucket.js";

const hitRow = z.object({ allowed: z.boolean(), retry_after_ms: z.number() });

/** Limits whose subject is the client's IP address (counted by its bucket, see ip-bucket.ts). */
const perIp = (name: RateLimitName) => name.endsWith("_ip");

/**
 * The one limiter every public flow uses, stored in PostgreSQL so that it holds across
 * instances (migration 012 explains the sliding window). A hit is its own statement, outside
 * the flow's transaction, so it counts even when the flow then fails. Per-IP limits count the
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

  /** Counts one hit on each (limit, subject); throws RESOURCE_EXHAUSTED when one is full. */
  async hit(
    workspace: { id: string; settings: Pick<WorkspaceSettings, "rate_limits"> } | null,
    checks: readonly (readonly [RateLimitName, string])[],
  ): Promise<void> {
    const now = this.clock.now();
    for (const [name, given] of checks) {
      const ip = perIp(name);
      const subject = ip ? ipBucket(given, this.options.ipv6PrefixLength) : given;
      const overrides: Partial<Record<RateLimitName, RateLimitRule>> | undefined =
        workspace?.settings.rate_limits;
      await this.count(
        `${name}:${workspace?.id ?? "-"}:${subject}`,
        overrides?.[name] ?? this.defaults[name],
        now,
      );
      if (ip && workspace !== null) {
        await this.count(`deployment_ip:-:${subject}`, this.defaults.deployment_ip, now);
      }
    }
  }

  private async count(key: string, rule: RateLimitRule, now: Date): Promise<void> {
    const result = await this.pool.one(sql.type(hitRow)`
      SELECT allowed, retry_after_ms::float8 AS retry_after_ms
      FROM keygate_rate_limit_hit(${key}, ${rule.limit}, make_interval(secs => ${rule.window_seconds}),
                                  ${sql.timestamp(now)})`);
    if (!result.allowed) throw new RateLimitedError(result.retry_after_ms);
  }
}

/**
 * Deletes rate-limit rows whose window has passed and lockout rows that lock nothing any more
 * and were last touched a day ago. Safe on every instance at once; answers the rows removed.
 */
export async function sweepRateLimits(pool: CommonQueryMethods, now: Date): Promise<number> {
  const limits = await pool.query(sql.unsafe`
    DELETE FROM rate_limits WHERE key IN (
      SELECT key FROM rate_limits WHERE expires_at < ${sql.timestamp(now)} LIMIT 5000)`);
  const failures = await pool.query(sql.unsafe`
    DELETE FROM login_failures
    WHERE (locked_until IS NULL OR locked_until < ${sql.timestamp(now)})
      AND updated_at < ${sql.timestamp(now)}::timestamptz - interval '1 day'`);
  return limits.rowCount + failures.rowCount;
}
