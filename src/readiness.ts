import type { DatabasePool } from "slonik";
import { type Migration, migrationsCurrent } from "./db/migrate.js";
import { databaseReadOnly } from "./db/read-only.js";
import type { Logger } from "./log.js";

export type ReadinessState =
  | { ready: true }
  | {
      ready: false;
      reason: "draining" | "database_unreachable" | "database_read_only" | "migrations_pending";
    };

/**
 * Whether this instance should receive traffic: not shutting down, the database answers and
 * takes writes (during a failover the address may reach a standby or a demoted primary for a
 * while), and every migration this code needs is applied. Checks are shared for a short time so that
 * probes and health watchers do not each cost a query.
 */
export class Readiness {
  private draining = false;
  private cached: { at: number; state: Promise<ReadinessState> } | undefined;

  constructor(
    private readonly pool: DatabasePool,
    private readonly migrations: readonly Migration[],
    private readonly logger: Logger,
    private readonly cacheMs = 1_000,
  ) {}

  startDraining(): void {
    this.draining = true;
    this.cached = undefined;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  check(): Promise<ReadinessState> {
    if (this.draining) return Promise.resolve({ ready: false, reason: "draining" });
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.cacheMs) return this.cached.state;
    const state = this.probe();
    this.cached = { at: now, state };
    return state;
  }

  private async probe(): Promise<ReadinessState> {
    try {
      if (await databaseReadOnly(this.pool)) return { ready: false, reason: "database_read_only" };
      const current = await migrationsCurrent(this.pool, this.migrations);
      return current ? { ready: true } : { ready: false, reason: "migrations_pending" };
    } catch (error) {
      this.logger.warn({ err: error }, "readiness: database unreachable");
      return { ready: false, reason: "database_unreachable" };
    }
  }
}
