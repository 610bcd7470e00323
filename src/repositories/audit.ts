import type { CommonQueryMethods, FragmentSqlToken } from "slonik";
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

/** The columns an audit row is written with, in the order of auditEventValues. */
export const auditEventColumns = sql.fragment`workspace_id, type, user_id, session_id, actor,
  ip_address, user_agent, outcome, details, request_id, created_at`;

/**
 * The values of an audit row, typed so that they also stand as a SELECT list (a statement
 * that writes the event beside what it records); `sessionId` may be a column of that
 * statement instead of the event's own.
 */
export function auditEventValues(
  e: AuditEventInput,
  sessionId: FragmentSqlToken = sql.fragment`${e.sessionId ?? null}::uuid`,
): FragmentSqlToken {
  return sql.fragment`${e.workspaceId}::uuid, ${e.type}::text, ${e.userId ?? null}::uuid,
    ${sessionId}, ${e.actor ?? null}::text, ${e.ipAddress ?? null}::text,
    ${e.userAgent ?? null}::text, ${e.outcome}::text, ${sql.jsonb(e.details ?? {})},
    ${e.requestId ?? null}::text, ${sql.timestamp(e.at)}`;
}

export async function insertAuditEvent(db: CommonQueryMethods, e: AuditEventInput): Promise<void> {
  await db.query(sql.type(voidRow)`
    INSERT INTO audit_events (${auditEventColumns}) VALUES (${auditEventValues(e)})`);
}
