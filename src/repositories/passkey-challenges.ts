import type { CommonQueryMethods, FragmentSqlToken } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

const idRow = z.object({ id: z.string() });

export type ChallengePurpose = "registration" | "sign_in" | "second_step" | "sensitive_action";
export type UserVerification = "required" | "preferred";

/**
 * Spent passkey challenges. A challenge is not stored when it is handed out (its binding is
 * sealed into it, see domain/factors/webauthn.ts); its keyed hash is stored when an answer
 * spends it, until it would have expired, so that no challenge is answered twice.
 */

/** A challenge answered: what its spent row records. */
export interface SpentChallenge {
  readonly workspaceId: string;
  readonly userId: string | null;
  readonly purpose: ChallengePurpose;
  readonly hash: Buffer;
  readonly userVerification: UserVerification;
  readonly now: Date;
  readonly expiresAt: Date;
}

/** The INSERT of a spent challenge, answering its id only when it was not spent before. */
export function spentChallengeInsert(input: SpentChallenge): FragmentSqlToken {
  return sql.fragment`
    INSERT INTO passkey_challenges (workspace_id, user_id, purpose, challenge_hash,
                                    user_verification, created_at, expires_at, consumed_at)
    VALUES (${input.workspaceId}, ${input.userId}, ${input.purpose}, ${sql.binary(input.hash)},
            ${input.userVerification}, ${sql.timestamp(input.now)},
            ${sql.timestamp(input.expiresAt)}, ${sql.timestamp(input.now)})
    ON CONFLICT ON CONSTRAINT passkey_challenges_challenge_hash_key DO NOTHING
    RETURNING id`;
}

/**
 * Records the challenge as spent; false when it already was. Of concurrent answers to one
 * challenge exactly one gets true (the unique hash decides).
 */
export async function spendPasskeyChallenge(
  db: CommonQueryMethods,
  input: SpentChallenge,
): Promise<boolean> {
  const row = await db.maybeOne(sql.type(idRow)`${spentChallengeInsert(input)}`);
  return row !== null;
}

/** Deletes up to `limit` spent challenges that expired before `before`; answers how many. */
export async function sweepExpiredPasskeyChallenges(
  db: CommonQueryMethods,
  input: { before: Date; limit: number },
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM passkey_challenges WHERE id IN (
      SELECT id FROM passkey_challenges WHERE expires_at < ${sql.timestamp(input.before)} LIMIT ${input.limit})`);
  return result.rowCount;
}
