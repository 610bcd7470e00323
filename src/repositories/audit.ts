import type { CommonQueryMethods } from "slonik";
import { sql, voidRow } from "../db/sql.js";

export interface AuditEventInput {
  readonly type: string;
  readonly workspaceId: string | null;
  readonly userId?: string | null;
  readonly sessionId?: string | null;
  readonly actor?: string | null;
  readonly ipAddress?: string | null;
  readonly userAgent?: string | null;
  readonly outcome: "success" | "failure";
  /** Never a secret: no password, token or code. */
  readonly details?: Record<string, string | number | boolean | null>;
  readonly requestId?: string | null;
  readonly at: Date;
}

export async function insertAuditEvent(db: CommonQueryMethods, e: AuditEventInput): Promise<void> {
  await db.query(sql.type(voidRow)`
    INSERT INTO audit_events (workspace_id, type, user_id, session_id, actor, ip_address, user_agent,
                              outcome, details, request_id, created_at)
    VALUES (${e.workspaceId}, ${e.type}, ${e.userId ?? null}, ${e.sessionId ?? null}, ${e.actor ?? null},
            ${e.ipAddress ?? null}, ${e.userAgent ?? null}, ${e.outcome}, ${sql.jsonb(e.details ?? {})},
            ${e.requestId ?? null}, ${sql.timestamp(e.at)})`);
}
