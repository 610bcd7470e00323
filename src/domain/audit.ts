import type { CommonQueryMethods } from "slonik";
import { type AuditEventInput, insertAuditEvent } from "../repositories/audit.js";
import type { AuthDeps, RequestMeta } from "./deps.js";

type AuditEventOf<E> = E & Pick<AuditEventInput, "at" | "ipAddress" | "userAgent" | "requestId">;

/** An audit event carrying the caller's request id, ip and user agent, stamped now. */
export function auditEvent<
  E extends Omit<AuditEventInput, "at" | "ipAddress" | "userAgent" | "requestId">,
>(deps: Pick<AuthDeps, "clock">, meta: RequestMeta, event: E): AuditEventOf<E> {
  return {
    ...event,
    ipAddress: meta.ipAddress,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
    at: deps.clock.now(),
  };
}

/** Writes an audit event carrying the caller's request id, ip and user agent. */
export function audit(
  db: CommonQueryMethods,
  deps: Pick<AuthDeps, "clock">,
  meta: RequestMeta,
  event: Omit<AuditEventInput, "at" | "ipAddress" | "userAgent" | "requestId">,
): Promise<void> {
  return insertAuditEvent(db, auditEvent(deps, meta, event));
}
