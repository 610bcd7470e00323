import {
  BackendTerminatedError,
  BackendTerminatedUnexpectedlyError,
  ConnectionError,
  StatementTimeoutError,
  UniqueIntegrityConstraintViolationError,
} from "slonik";
import { sqlStateOf } from "../db/sql-state.js";
import { DomainError } from "../errors.js";

/**
 * What went wrong in a call, whatever protocol answers it: the Connect interceptor and the
 * RFC 6749 endpoints both start here and only then speak their own error format.
 */
export type Classified =
  /** A refusal the flow chose: its kind and reason are the answer. */
  | { kind: "domain"; error: DomainError }
  /** A unique key taken by a concurrent write: ALREADY_EXISTS, naming the constraint. */
  | { kind: "exists"; constraint: string }
  /** A lost, timed-out or momentarily unusable database: try again (never INTERNAL). */
  | { kind: "unavailable" }
  /** A bug: logged with its stack, answered with nothing of it. */
  | { kind: "unexpected" };

export function classifyError(error: unknown): Classified {
  if (error instanceof DomainError) return { kind: "domain", error };
  if (error instanceof UniqueIntegrityConstraintViolationError)
    return { kind: "exists", constraint: error.constraint ?? "" };
  if (isDatabaseUnavailable(error)) return { kind: "unavailable" };
  return { kind: "unexpected" };
}

/** Socket errors the pg driver passes through unwrapped when the link drops mid-query. */
const lostConnectionCodes = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT"]);

/**
 * SQLSTATEs that mean "try again": a deadlock or a serialization failure between concurrent
 * transactions (the database rolled this one back); 25006 read_only_sql_transaction (the
 * address reaches a standby, or a demoted primary, as during a failover); and class 57P
 * (admin_shutdown, crash_shutdown, cannot_connect_now: shutting down, starting up, in
 * recovery).
 */
const retryableSqlStates = new Set(["40P01", "40001", "25006", "57P01", "57P02", "57P03"]);

/** A lost, timed-out or momentarily unusable database: UNAVAILABLE (HTTP 503), never INTERNAL. */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (retryableSqlStates.has(sqlStateOf(error) ?? "")) return true;
  if (
    error instanceof Error &&
    (lostConnectionCodes.has((error as NodeJS.ErrnoException).code ?? "") ||
      error.message === "Connection terminated unexpectedly")
  )
    return true;
  return (
    error instanceof ConnectionError ||
    error instanceof BackendTerminatedError ||
    // The connection dropped under a query (network cut, server restart): not a sibling
    // class of BackendTerminatedError in Slonik, so it needs its own check.
    error instanceof BackendTerminatedUnexpectedlyError ||
    error instanceof StatementTimeoutError
  );
}
