import { z } from "zod";
import { withTenant } from "../../db/with-tenant.js";
import { type AuditEventRow, listAuditEventsPage } from "../../repositories/admin-workspaces.js";
import {
  type Caller,
  callerWorkspace,
  requireDeploymentRead,
  requireWorkspaceRead,
} from "../admin-auth.js";
import type { AdminDeps } from "../deps.js";
import { decodePageToken, pageOf, pageSize } from "../pagination.js";
import { Violations } from "../validate.js";

// Microsecond precision in the cursor: created_at is read as milliseconds, and a cursor
// rounded to them would skip or repeat events written within the same millisecond.
const auditCursor = z.object({
  t: z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/),
  i: z.uuid(),
});

// Timestamps PostgreSQL and Date both hold (years 1 to 9999).
const minMs = Date.parse("0001-01-01T00:00:00Z");
const maxMs = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

const maxTypes = 50;

function checkTime(v: Violations, field: string, ms: number | null): Date | null {
  if (ms === null) return null;
  if (!Number.isFinite(ms) || ms < minMs || ms > maxMs) {
    v.add(field, "is out of range");
    return null;
  }
  return new Date(ms);
}

/**
 * ListAuditEvents: a workspace-scoped caller (workspace read) sees its workspace's events and
 * must name it; deployment read sees all, or one workspace's. Newest first, filtered by types,
 * user and [start_time, end_time).
 */
export async function listAuditEvents(
  deps: AdminDeps,
  caller: Caller,
  input: {
    workspaceId: string;
    pageSize: number;
    pageToken: string;
    types: readonly string[];
    userId: string;
    startMs: number | null;
    endMs: number | null;
  },
): Promise<{ events: readonly AuditEventRow[]; nextPageToken: string }> {
  const v = new Violations().uuid("workspace_id", input.workspaceId).uuid("user_id", input.userId);
  if (input.types.length > maxTypes) v.add("types", `lists more than ${maxTypes} types`);
  else
    input.types.forEach((t, i) => {
      v.required(`types[${i}]`, t, 100);
    });
  const start = checkTime(v, "start_time", input.startMs);
  const end = checkTime(v, "end_time", input.endMs);
  if (start && end && start.getTime() > end.getTime()) v.add("end_time", "is before start_time");
  const scoped = callerWorkspace(caller) !== null;
  if (scoped && input.workspaceId === "")
    v.add("workspace_id", "is required for a workspace-scoped caller");
  v.throwIfAny();

  const workspaceId = input.workspaceId === "" ? null : input.workspaceId;
  if (workspaceId === null) requireDeploymentRead(caller);
  else requireWorkspaceRead(caller, workspaceId);

  const limit = pageSize(input.pageSize);
  const cursor = decodePageToken(input.pageToken, "audit_events", auditCursor);
  const query = {
    workspaceId,
    types: input.types,
    userId: input.userId === "" ? null : input.userId,
    start,
    end,
    before: cursor ? { at: cursor.t, id: cursor.i } : null,
    limit: limit + 1,
  };
  const rows =
    workspaceId === null
      ? await listAuditEventsPage(deps.pool, query)
      : await withTenant(deps.pool, workspaceId, (tx) => listAuditEventsPage(tx, query));
  const { page, nextPageToken } = pageOf(rows, limit, "audit_events", (last) => ({
    t: last.cursor_at,
    i: last.id,
  }));
  return { events: page, nextPageToken };
}
