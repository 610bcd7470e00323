import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

export type ChallengePurpose = "registration" | "sign_in" | "second_step" | "sensitive_action";
export type UserVerification = "required" | "preferred";

export const passkeyChallengeRow = z.object({
  id: z.string(),
  workspace_id: z.string(),
  user_id: z.string().nullable(),
  pending_login_id: z.string().nullable(),
  purpose: z.enum(["registration", "sign_in", "second_step", "sensitive_action"]),
  user_verification: z.enum(["required", "preferred"]),
  expires_at: z.number(),
});
export type PasskeyChallengeRow = z.infer<typeof passkeyChallengeRow>;

const columns = sql.fragment`id, workspace_id, user_id, pending_login_id, purpose,
  user_verification, expires_at`;

export async function insertPasskeyChallenge(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    userId: string | null;
    pendingLoginId: string | null;
    purpose: ChallengePurpose;
    hash: Buffer;
    userVerification: UserVerification;
    now: Date;
    expiresAt: Date;
  },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    INSERT INTO passkey_challenges (workspace_id, user_id, pending_login_id, purpose,
                                    challenge_hash, user_verification, created_at, expires_at)
    VALUES (${input.workspaceId}, ${input.userId}, ${input.pendingLoginId}, ${input.purpose},
            ${sql.binary(input.hash)}, ${input.userVerification}, ${sql.timestamp(input.now)},
            ${sql.timestamp(input.expiresAt)})`);
}

/**
 * Consumes a live challenge of this workspace and purpose, bound to the given user and
 * pending login (null: none), once: of concurrent answers to one challenge exactly one gets
 * the row; an expired, spent or foreign one gets nothing.
 */
export async function consumePasskeyChallenge(
  db: CommonQueryMethods,
  input: {
    workspaceId: string;
    purpose: ChallengePurpose;
    hash: Buffer;
    userId: string | null;
    pendingLoginId: string | null;
    now: Date;
  },
): Promise<PasskeyChallengeRow | null> {
  return db.maybeOne(sql.type(passkeyChallengeRow)`
    UPDATE passkey_challenges SET consumed_at = ${sql.timestamp(input.now)}
    WHERE challenge_hash = ${sql.binary(input.hash)}
      AND workspace_id = ${input.workspaceId} AND purpose = ${input.purpose}
      AND user_id IS NOT DISTINCT FROM ${input.userId}
      AND pending_login_id IS NOT DISTINCT FROM ${input.pendingLoginId}
      AND consumed_at IS NULL AND expires_at > ${sql.timestamp(input.now)}
    RETURNING ${columns}`);
}
