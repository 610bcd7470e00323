import { setTimeout as sleep } from "node:timers/promises";
import type { DatabasePool } from "slonik";
import type { Clock } from "../clock.js";
import { UnavailableError } from "../errors.js";
import { isMember } from "../repositories/memberships.js";
import {
  latestRevocationCursor,
  liveRevocations,
  type RevocationRow,
  revocationsAfter,
} from "../repositories/revocations.js";
import { type Caller, requireIntrospect } from "./admin-auth.js";
import type { RevocationState } from "./revocations.js";
import { Violations } from "./validate.js";

export type FeedEvent =
  | { readonly kind: "revocation"; readonly row: RevocationRow }
  | {
      readonly kind: "snapshot_complete";
      readonly cursor: number;
      /** The caller's workspace scope, null for a deployment-wide key. */
      readonly workspaceId: string | null;
    }
  | { readonly kind: "heartbeat"; readonly cursor: number; readonly time: Date };

export interface FeedDeps {
  readonly pool: DatabasePool;
  readonly clock: Clock;
  readonly revocations: RevocationState;
  readonly heartbeatMs: number;
  /** True once the instance is shutting down: streams end so connections can close. */
  readonly draining: () => boolean;
}

/** Rows a subscriber may have waiting before its stream is ended (it resumes by cursor). */
const maxQueued = 10_000;
const pageSize = 1_000;

/**
 * WatchRevocations: the revocations that can still matter (or, with a cursor, what came
 * after it), then SnapshotComplete, then each revocation as this instance applies it, in
 * cursor order, with heartbeats while idle. The stream follows the instance's RevocationState,
 * so it is as current as introspection here: LISTEN/NOTIFY, resync, own changes. Heartbeats
 * are sent only while that state is trusted, so a subscriber that stops hearing them knows
 * its view may be stale. Rows pruned from the table concerned only expired tokens, so
 * resuming from any earlier cursor misses nothing that matters. A workspace-scoped key sees
 * its workspace's rows and the user cut-offs of its members.
 */
export async function* watchRevocations(
  deps: FeedDeps,
  caller: Caller,
  cursorText: string,
  signal: AbortSignal,
): AsyncGenerator<FeedEvent> {
  requireIntrospect(caller);
  const from = parseCursor(cursorText);
  const scope = caller.workspaceId;
  const queue: RevocationRow[] = [];
  let wake: (() => void) | undefined;
  const subscription = deps.revocations.subscribe((row) => {
    queue.push(row);
    wake?.();
  });
  try {
    if (from !== null && from > (await latestRevocationCursor(deps.pool))) {
      new Violations()
        .add("cursor", "is ahead of the feed; start again with an empty cursor")
        .throwIfAny();
    }
    const visible = visibility(deps.pool, scope);
    let position = Math.max(from ?? 0, 0);
    const backlog =
      from === null
        ? await liveRevocations(deps.pool, { upTo: subscription.cursor, now: deps.clock.now() })
        : await rowsBetween(deps.pool, from, subscription.cursor);
    for (const row of backlog) {
      if (await visible(row)) yield { kind: "revocation", row };
    }
    position = Math.max(position, subscription.cursor);
    yield { kind: "snapshot_complete", cursor: position, workspaceId: scope };

    let lastSent = performance.now();
    while (!signal.aborted && !deps.draining()) {
      if (queue.length > maxQueued) {
        throw new UnavailableError("the stream fell behind; resume with the last cursor");
      }
      const row = queue.shift();
      if (row) {
        if (row.cursor <= position) continue;
        position = row.cursor;
        if (await visible(row)) {
          yield { kind: "revocation", row };
          lastSent = performance.now();
        }
        continue;
      }
      const idle = performance.now() - lastSent;
      if (idle >= deps.heartbeatMs) {
        if (deps.revocations.trusted) {
          yield { kind: "heartbeat", cursor: position, time: deps.clock.now() };
        }
        lastSent = performance.now();
        continue;
      }
      const woken = new Promise<void>((resolve) => {
        wake = resolve;
      });
      // Wakes for a row, the heartbeat, a drain check each second, or the caller leaving.
      await Promise.race([
        woken,
        sleep(Math.min(deps.heartbeatMs - idle, 1_000), undefined, { signal }).catch(() => {}),
      ]);
      wake = undefined;
    }
  } finally {
    subscription.unsubscribe();
  }
}

function parseCursor(text: string): number | null {
  if (text === "") return null;
  if (!/^\d{1,15}$/.test(text)) {
    new Violations().add("cursor", "is not a cursor this feed gave out").throwIfAny();
  }
  return Number(text);
}

async function rowsBetween(pool: DatabasePool, after: number, upTo: number) {
  const rows: RevocationRow[] = [];
  let cursor = after;
  while (cursor < upTo) {
    const page = await revocationsAfter(pool, { cursor, limit: pageSize });
    for (const row of page) if (row.cursor <= upTo) rows.push(row);
    const last = page[page.length - 1];
    if (!last || page.length < pageSize) break;
    cursor = last.cursor;
  }
  return rows;
}

/** Which rows a caller limited to `scope` may see (all when null). */
function visibility(pool: DatabasePool, scope: string | null) {
  return async (row: RevocationRow): Promise<boolean> => {
    if (scope === null) return true;
    // A revoked signing key concerns every workspace's tokens.
    if (row.kind === "signing_key") return true;
    if (row.kind !== "user") return row.workspace_id === scope;
    // A user row always names its user (migration 015).
    return row.user_id !== null && isMember(pool, scope, row.user_id);
  };
}
