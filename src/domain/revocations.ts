import { performance } from "node:perf_hooks";
import pg from "pg";
import type { DatabasePool } from "slonik";
import type { Clock } from "../clock.js";
import { UnavailableError } from "../errors.js";
import type { Logger } from "../log.js";
import {
  latestRevocationCursor,
  liveRevocations,
  type RevocationRow,
  revocationsAfter,
} from "../repositories/revocations.js";
import { type RevocableToken, type Revocation, RevocationSet } from "../revocation-set.js";

export type { RevocableToken } from "../revocation-set.js";

const channel = "keygate_revocations";
const pageSize = 1_000;
/** While the listener is down, the feed is polled this often at least. */
const fallbackPollMs = 500;

/**
 * The revocations that can still matter (migrations/015), in memory on every instance, so an
 * access token is checked against them without a database call:
 * - loaded at start;
 * - kept current through LISTEN/NOTIFY on a connection of its own (each commit that adds
 *   revocations notifies), and after this instance's own revocations by `catchUp()`;
 * - re-read every `resyncMs` (every 500 ms while the listener is down), which heals a missed
 *   notification, since rows are read by cursor and cursors follow commit order;
 * - trusted only while the last successful read started less than `maxStalenessMs` ago:
 *   past that, `assertTrusted` throws UNAVAILABLE rather than let a revoked token pass.
 * Trust is measured on the monotonic clock; expiry on the service clock, like the tokens.
 */
export class RevocationState {
  private readonly set = new RevocationSet();
  private readonly subscribers = new Set<(row: RevocationRow) => void>();
  private cursor = 0;
  private confirmedAt = Number.NEGATIVE_INFINITY;
  private listener: pg.Client | undefined;
  private listening = false;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private stopped = false;
  private reading: Promise<void> | undefined;
  private readAgain = false;
  private failing = false;

  constructor(
    private readonly options: {
      pool: DatabasePool;
      /** Connection string for the listener; undefined: poll only (the embedded database). */
      listenUrl: string | undefined;
      clock: Clock;
      logger: Logger;
      resyncMs: number;
      maxStalenessMs: number;
    },
  ) {}

  /** Loads the live revocations and starts following the feed. Throws when the database fails. */
  async start(): Promise<void> {
    const startedAt = performance.now();
    const { pool, clock } = this.options;
    const upTo = await latestRevocationCursor(pool);
    for (const row of await liveRevocations(pool, { upTo, now: clock.now() })) this.apply(row);
    this.cursor = upTo;
    this.confirmedAt = startedAt;
    await this.listen();
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const listener = this.listener;
    this.listener = undefined;
    this.listening = false;
    await listener?.end().catch(() => {});
    await this.reading?.catch(() => {});
  }

  /**
   * Reads what was committed since the last read. Concurrent calls share a read; a call made
   * while one is under way gets a second read that starts after it, so whoever committed a
   * revocation before calling sees it applied when this resolves.
   */
  catchUp(): Promise<void> {
    if (this.reading) {
      this.readAgain = true;
      return this.reading;
    }
    const reading = (async () => {
      try {
        do {
          this.readAgain = false;
          await this.readOnce();
        } while (this.readAgain && !this.stopped);
      } finally {
        this.reading = undefined;
      }
    })();
    this.reading = reading;
    return reading;
  }

  /** After this instance committed revocations: apply them before answering. Never throws. */
  async changed(): Promise<void> {
    try {
      await this.catchUp();
    } catch (error) {
      this.options.logger.warn({ err: error }, "could not read the revocation feed");
    }
  }

  /** Throws UNAVAILABLE when the state may miss revocations. */
  assertTrusted(): void {
    if (performance.now() - this.confirmedAt > this.options.maxStalenessMs) {
      throw new UnavailableError(
        "revocations cannot be checked: the database has not answered recently, retry later",
      );
    }
  }

  /** Whether the state can be relied on (see assertTrusted). */
  get trusted(): boolean {
    return performance.now() - this.confirmedAt <= this.options.maxStalenessMs;
  }

  /** Whether a revocation kills this token (its iat is in whole seconds). */
  revokes(token: RevocableToken): boolean {
    return this.set.revokes(token);
  }

  /**
   * The latest cut-off for the user's tokens in the workspace, or null: a token issued now
   * must carry a later iat (in whole seconds), or it would be born revoked.
   */
  cutOffFor(userId: string, workspaceId: string): number | null {
    return this.set.cutOffFor(userId, workspaceId);
  }

  /**
   * Calls `listener` with every row applied from now on, in cursor order; answers the cursor
   * up to which the state is applied at this moment (rows after it reach the listener).
   */
  subscribe(listener: (row: RevocationRow) => void): { cursor: number; unsubscribe(): void } {
    this.subscribers.add(listener);
    return { cursor: this.cursor, unsubscribe: () => this.subscribers.delete(listener) };
  }

  /** Entries held, for tests and metrics. */
  get size(): number {
    return this.set.size;
  }

  private async readOnce(): Promise<void> {
    const startedAt = performance.now();
    for (;;) {
      const rows = await revocationsAfter(this.options.pool, {
        cursor: this.cursor,
        limit: pageSize,
      });
      for (const row of rows) {
        this.apply(row);
        this.cursor = row.cursor;
        for (const subscriber of this.subscribers) subscriber(row);
      }
      if (rows.length < pageSize) break;
    }
    this.confirmedAt = Math.max(this.confirmedAt, startedAt);
  }

  private apply(row: RevocationRow): void {
    this.set.apply(revocationOf(row));
  }

  /** Forgets what concerns only tokens that have expired. */
  private prune(): void {
    this.set.prune(this.options.clock.now().getTime());
  }

  private async listen(): Promise<void> {
    const url = this.options.listenUrl;
    if (url === undefined || this.stopped) return;
    const client = new pg.Client({
      connectionString: url,
      keepAlive: true,
      connectionTimeoutMillis: 5_000,
    });
    client.on("error", (error) => this.listenerLost(client, error));
    client.on("end", () => this.listenerLost(client, undefined));
    client.on("notification", () => {
      this.catchUp().catch((error: unknown) => this.readFailed(error));
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${channel}`);
    } catch (error) {
      this.options.logger.warn({ err: error }, "revocation listener could not connect");
      await client.end().catch(() => {});
      return;
    }
    this.listener = client;
    this.listening = true;
    // Whatever was committed while no one listened.
    await this.catchUp().catch((error: unknown) => this.readFailed(error));
  }

  private listenerLost(client: pg.Client, error: unknown): void {
    if (this.listener !== client) return;
    this.listener = undefined;
    this.listening = false;
    if (this.stopped) return;
    this.options.logger.warn({ err: error }, "revocation listener lost; polling until it is back");
    client.end().catch(() => {});
    // Poll from now on, not after the (long) resync interval already scheduled.
    if (!this.ticking) {
      clearTimeout(this.timer);
      this.schedule();
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    const { resyncMs, listenUrl } = this.options;
    const delay =
      listenUrl !== undefined && !this.listening ? Math.min(resyncMs, fallbackPollMs) : resyncMs;
    this.timer = setTimeout(() => {
      this.ticking = true;
      this.tick().finally(() => {
        this.ticking = false;
        this.schedule();
      });
    }, delay);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.options.listenUrl !== undefined && !this.listening) await this.listen();
    try {
      await this.catchUp();
      if (this.failing) this.options.logger.info("revocation feed readable again");
      this.failing = false;
    } catch (error) {
      this.readFailed(error);
    }
    this.prune();
  }

  private readFailed(error: unknown): void {
    if (this.failing) return;
    this.failing = true;
    this.options.logger.warn({ err: error }, "could not read the revocation feed");
  }
}

export function revocationOf(row: RevocationRow): Revocation {
  return {
    kind: row.kind,
    workspaceId: row.workspace_id,
    userId: row.user_id,
    sessionId: row.session_id,
    kid: row.kid,
    cutOffMs: row.cut_off_time,
    expireMs: row.expire_time,
  };
}
