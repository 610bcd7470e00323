import type { CommonQueryMethods, DatabasePool } from "slonik";
import { z } from "zod";
import type { Clock } from "../clock.js";
import type { RateLimitName, RateLimitRule, RateLimits, WorkspaceSettings } from "../config.js";
import { sql } from "../db/sql.js";
import { RateLimitedError } from "../errors.js";
import { ipBucket } from "./ip-bucket.js";

const hitRow = z.object({ allowed: z.boolean(), retry_after_ms: z.number() });

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
    const keys = sql.array(
      counts.map((c) => c.key),
      "text",
    );
    const limits = sql.array(
      counts.map((c) => c.rule.limit),
      "int4",
    );
    const windows = sql.array(
      counts.map((c) => c.rule.window_seconds),
      "int4",
    );
    const result = await this.pool.one(sql.type(hitRow)`
      SELECT allowed, retry_after_ms::float8 AS retry_after_ms
      FROM keygate_rate_limit_hits(${keys}, ${limits}, ${windows}, ${sql.timestamp(this.clock.now())})`);
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
