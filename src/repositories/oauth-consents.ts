import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/** What a member allowed a third-party client so far (migrations/028). */
export const oauthConsentRow = z.object({
  scopes: z.array(z.string()),
  resources: z.array(z.string()),
});
export type OAuthConsentRow = z.infer<typeof oauthConsentRow>;

interface ConsentKey {
  workspaceId: string;
  userId: string;
  clientId: string;
}

export async function findOAuthConsent(
  db: CommonQueryMethods,
  input: ConsentKey,
): Promise<OAuthConsentRow | null> {
  return db.maybeOne(sql.type(oauthConsentRow)`
    SELECT scopes, resources FROM oauth_consents
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}
      AND client_id = ${input.clientId}`);
}

/**
 * Adds the scopes and resources to what the member consented to: a narrower request later
 * must not take back what an earlier, wider one was given.
 */
export async function recordOAuthConsent(
  db: CommonQueryMethods,
  input: ConsentKey & { scopes: readonly string[]; resources: readonly string[]; now: Date },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    INSERT INTO oauth_consents (workspace_id, user_id, client_id, scopes, resources, created_at,
                                updated_at)
    VALUES (${input.workspaceId}, ${input.userId}, ${input.clientId},
            ${sql.array([...input.scopes], "text")}, ${sql.array([...input.resources], "text")},
            ${sql.timestamp(input.now)}, ${sql.timestamp(input.now)})
    ON CONFLICT (workspace_id, user_id, client_id) DO UPDATE SET
      scopes = ARRAY(SELECT DISTINCT s FROM unnest(oauth_consents.scopes || EXCLUDED.scopes) s
                     ORDER BY s),
      resources = ARRAY(SELECT DISTINCT r
                        FROM unnest(oauth_consents.resources || EXCLUDED.resources) r
                        ORDER BY r),
      updated_at = EXCLUDED.updated_at`);
}

/** Forgets the member's consent to the client; answers whether there was one. */
export async function deleteOAuthConsent(
  db: CommonQueryMethods,
  input: ConsentKey,
): Promise<boolean> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM oauth_consents
    WHERE workspace_id = ${input.workspaceId} AND user_id = ${input.userId}
      AND client_id = ${input.clientId}`);
  return result.rowCount > 0;
}
