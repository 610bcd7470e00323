import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql } from "../db/sql.js";

/**
 * Grants as users and admins see them: a grant is not a table of its own but a user's live
 * sessions for one OAuth client (migrations/025_oauth_clients_create.sql), taken together.
 */

export const grantRow = z.object({
  workspace_id: z.string(),
  user_id: z.string(),
  client_id: z.string(),
  client_name: z.string(),
  scopes: z.array(z.string()),
  created_at: z.number(),
  last_used_at: z.number(),
  session_count: z.number(),
});
export type GrantRow = z.infer<typeof grantRow>;

/**
 * The workspace's live grants, one row per (user, client), optionally of one user or one
 * client, ordered by user id then client id (a key that does not move while a caller pages,
 * unlike the times), after `after` when given.
 */
export async function listLiveGrants(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string | null;
    clientId: string | null;
    now: Date;
    after: { userId: string; clientId: string } | null;
    limit: number;
  },
): Promise<readonly GrantRow[]> {
  const now = sql.timestamp(input.now);
  return db.any(sql.type(grantRow)`
    SELECT s.workspace_id, s.user_id, s.client_id, c.name AS client_name,
           coalesce(array_agg(DISTINCT scope ORDER BY scope) FILTER (WHERE scope IS NOT NULL),
                    '{}') AS scopes,
           min(s.created_at) AS created_at, max(s.last_used_at) AS last_used_at,
           count(DISTINCT s.id)::int AS session_count
    FROM sessions s
    JOIN oauth_clients c ON c.workspace_id = s.workspace_id AND c.client_id = s.client_id
    LEFT JOIN LATERAL unnest(s.scopes) AS scope ON true
    WHERE s.workspace_id = ${input.workspaceId} AND s.client_id IS NOT NULL
      AND s.revoked_at IS NULL AND s.expires_at > ${now} AND s.idle_expires_at > ${now}
      AND (${input.userId}::uuid IS NULL OR s.user_id = ${input.userId}::uuid)
      AND (${input.clientId}::text IS NULL OR s.client_id = ${input.clientId}::text)
      AND (${input.after === null}
           OR (s.user_id, s.client_id) > (${input.after?.userId ?? null}::uuid,
                                          ${input.after?.clientId ?? null}::text))
    GROUP BY s.workspace_id, s.user_id, s.client_id, c.name
    ORDER BY s.user_id, s.client_id
    LIMIT ${input.limit}`);
}
