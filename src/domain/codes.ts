import { randomUUID } from "node:crypto";
import type { CommonQueryMethods, DatabaseTransactionConnection } from "slonik";
import {
  hashesEqual,
  newNumericCode,
  newOpaqueToken,
  opaqueHash,
} from "../crypto/opaque-tokens.js";
import {
  findUnusedLinkByHash,
  insertCode,
  invalidateLiveCodes,
  lockLatestUnusedCode,
  markCodeConsumed,
  recordWrongCode,
} from "../repositories/one-time-codes.js";

/** What a code or link is for; one never works for another (SECURITY.md 14). */
export type CodePurpose =
  | "email_verification"
  | "password_reset"
  | "magic_link"
  | "login_second_step"
  | "passwordless_sign_in"
  | "sensitive_action"
  | "action_proof"
  /** An action proof from a factor of the membership (an app code, a passkey), not the mailbox. */
  | "factor_action_proof"
  | "invitation"
  /** An existing account signed up in an open workspace it is not in: joining it, on consent. */
  | "join";

export const maxCodeAttempts = 5;

/**
 * Issues a 6-digit code or a 256-bit link token for (workspace, user, purpose), invalidating
 * the earlier live ones of the same purpose (SECURITY.md 13). Answers the secret to email.
 */
export async function issueCode(
  tx: DatabaseTransactionConnection,
  input: {
    tokenSecret: Buffer;
    workspaceId: string;
    userId: string;
    purpose: CodePurpose;
    kind: "code" | "link";
    now: Date;
    ttlSeconds: number;
  },
): Promise<{ secret: string; expiresAt: Date }> {
  const id = randomUUID();
  const secret = input.kind === "code" ? newNumericCode() : newOpaqueToken("link");
  const hash =
    input.kind === "code"
      ? opaqueHash(input.tokenSecret, "code", `${id}\0${secret}`)
      : opaqueHash(input.tokenSecret, "link", secret);
  const expiresAt = new Date(input.now.getTime() + input.ttlSeconds * 1000);
  await invalidateLiveCodes(tx, input);
  await insertCode(tx, {
    id,
    workspaceId: input.workspaceId,
    userId: input.userId,
    purpose: input.purpose,
    kind: input.kind,
    hash,
    now: input.now,
    expiresAt,
  });
  return { secret, expiresAt };
}

export type ConsumeResult =
  | { ok: true; workspaceId: string; userId: string }
  | { ok: false; attemptRecorded: boolean };

async function findLiveLink(
  db: CommonQueryMethods,
  input: { tokenSecret: Buffer; purpose: CodePurpose; token: string; now: Date },
  lock: boolean,
) {
  const hash = opaqueHash(input.tokenSecret, "link", input.token);
  const row = await findUnusedLinkByHash(db, hash, lock);
  return row && row.purpose === input.purpose && row.expires_at > input.now.getTime() ? row : null;
}

/**
 * Whether a link token of the given purpose is live, and whose it is, without using it: for
 * flows that must check more (a new password's policy) before spending the link.
 */
export async function peekLink(
  db: CommonQueryMethods,
  input: { tokenSecret: Buffer; purpose: CodePurpose; token: string; now: Date },
): Promise<ConsumeResult> {
  const row = await findLiveLink(db, input, false);
  return row
    ? { ok: true, workspaceId: row.workspace_id, userId: row.user_id }
    : { ok: false, attemptRecorded: false };
}

/**
 * Consumes a link token of the given purpose: single use (the row is locked, so of two
 * concurrent uses exactly one succeeds), unexpired, not replaced by a newer one.
 */
export async function consumeLink(
  tx: DatabaseTransactionConnection,
  input: { tokenSecret: Buffer; purpose: CodePurpose; token: string; now: Date },
): Promise<ConsumeResult> {
  const row = await findLiveLink(tx, input, true);
  if (!row) return { ok: false, attemptRecorded: false };
  await markCodeConsumed(tx, { id: row.id, now: input.now });
  return { ok: true, workspaceId: row.workspace_id, userId: row.user_id };
}

/**
 * Checks a 6-digit code against the live code of (workspace, user, purpose). A wrong value
 * counts an attempt; the fifth wrong attempt kills the code, even for the right value
 * afterwards (SECURITY.md 15). The caller must commit even when this answers not ok, so that
 * the attempt is recorded.
 */
export async function consumeCode(
  tx: DatabaseTransactionConnection,
  input: {
    tokenSecret: Buffer;
    workspaceId: string;
    userId: string;
    purpose: CodePurpose;
    code: string;
    now: Date;
  },
): Promise<ConsumeResult> {
  const row = await lockLatestUnusedCode(tx, input);
  if (!row || row.expires_at <= input.now.getTime() || row.attempts >= maxCodeAttempts) {
    return { ok: false, attemptRecorded: false };
  }
  const given = opaqueHash(input.tokenSecret, "code", `${row.id}\0${input.code}`);
  if (!/^\d{6}$/.test(input.code) || !hashesEqual(given, row.secret_hash)) {
    await recordWrongCode(tx, { id: row.id, maxAttempts: maxCodeAttempts, now: input.now });
    return { ok: false, attemptRecorded: true };
  }
  await markCodeConsumed(tx, { id: row.id, now: input.now });
  return { ok: true, workspaceId: row.workspace_id, userId: row.user_id };
}
