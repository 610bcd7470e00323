import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/**
 * Records a private_key_jwt assertion's jti until its exp (migration 026); answers false when
 * the client used it already. The client's expired ones are dropped first, so the table holds
 * only assertions that could still be replayed.
 */
export async function recordClientAssertion(
  db: CommonQueryMethods,
  input: { workspaceId: string; clientId: string; jti: string; expiresAt: Date; now: Date },
): Promise<boolean> {
  await db.query(sql.type(voidRow)`
    DELETE FROM oauth_client_assertions
    WHERE workspace_id = ${input.workspaceId} AND client_id = ${input.clientId}
      AND expires_at <= ${sql.timestamp(input.now)}`);
  const row = await db.maybeOne(sql.type(z.object({ jti: z.string() }))`
    INSERT INTO oauth_client_assertions (workspace_id, client_id, jti, expires_at)
    VALUES (${input.workspaceId}, ${input.clientId}, ${input.jti},
            ${sql.timestamp(input.expiresAt)})
    ON CONFLICT DO NOTHING
    RETURNING jti`);
  return row !== null;
}
