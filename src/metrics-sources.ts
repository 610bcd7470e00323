import type { DatabasePool } from "slonik";
import { Metrics } from "./metrics.js";
import { countUnsentMail } from "./repositories/outbox.js";

/** The instance's metrics, with the gauges read from its parts at each scrape. */
export function instanceMetrics(sources: {
  pool: DatabasePool;
  sender: { readonly stats: { sent: number; failed: number } };
  hasher: { readonly stats: { queued: number; waitP50Ms: number; waitP99Ms: number } };
  revocations: { readonly size: number; readonly trusted: boolean };
  introspector: { readonly cachedTokens: number };
}): Metrics {
  const m = new Metrics();
  m.gauge("keygate_outbox_depth", "Mail waiting in the outbox (all instances).", async (set) => {
    try {
      set(await countUnsentMail(sources.pool));
    } catch {
      // The database is away; the pool and readiness metrics say so.
    }
  });
  m.counter("keygate_outbox_sent_total", "Mail delivered by this instance.", () => {
    return sources.sender.stats.sent;
  });
  m.counter("keygate_outbox_failures_total", "Failed delivery attempts of this instance.", () => {
    return sources.sender.stats.failed;
  });
  m.gauge(
    "keygate_db_pool_connections",
    "Database pool connections by state.",
    (set) => {
      const s = sources.pool.state();
      set(s.acquiredConnections, { state: "acquired" });
      set(s.idleConnections, { state: "idle" });
      set(s.pendingConnections, { state: "pending" });
    },
    ["state"],
  );
  m.gauge("keygate_db_pool_waiting", "Callers waiting for a pool connection.", (set) =>
    set(sources.pool.state().waitingClients),
  );
  m.gauge("keygate_password_hash_queue_length", "Password hashes waiting for a worker.", (set) =>
    set(sources.hasher.stats.queued),
  );
  m.gauge(
    "keygate_password_hash_wait_seconds",
    "Time password hashes waited for a worker since start, by quantile.",
    (set) => {
      const s = sources.hasher.stats;
      set(s.waitP50Ms / 1000, { quantile: "0.5" });
      set(s.waitP99Ms / 1000, { quantile: "0.99" });
    },
    ["quantile"],
  );
  m.gauge("keygate_revocations_in_memory", "Revocations held in memory.", (set) =>
    set(sources.revocations.size),
  );
  m.gauge(
    "keygate_revocations_trusted",
    "1 while the revocation state is current, 0 while introspection answers UNAVAILABLE.",
    (set) => set(sources.revocations.trusted ? 1 : 0),
  );
  m.gauge("keygate_introspection_cache_entries", "Verified access tokens cached.", (set) =>
    set(sources.introspector.cachedTokens),
  );
  return m;
}
