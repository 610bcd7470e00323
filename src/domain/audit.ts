import type { CommonQueryMethods } from "slonik";
import { type AuditEventInput, insertAuditEvent } from "../repositories/audit.js";
import type { AuthDeps, RequestMeta } from "./deps.js";

/** Writes an audit event carrying the caller's request id, ip and user agent. */
export function audit(
  db: CommonQueryMethods,
  deps: Pick<AuthDeps, "clock">,
  meta: RequestMeta,
  event: Omit<AuditEventInput, "at" | "ipAddress" | "userAgent" | "requestId">,
): Promise<void> {
  return insertAuditEvent(db, {
    ...event,
    ipAddress: meta.ipAddress,
    userAgent: meta.userAgent,
    requestId: meta.requestId,
    at: deps.clock.now(),
  });
}
