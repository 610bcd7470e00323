import type { CommonQueryMethods } from "slonik";
import { z } from "zod";
import { sql, voidRow } from "../db/sql.js";

/**
 * The mail outbox (migrations 010 and 019): the one module that writes mail_outbox. What a
 * row means, how its body is sealed and when it is retried is mail/outbox.ts's.
 */

const countRow = z.object({ count: z.number() });

export const claimedMailRow = z.object({
  id: z.bigint(),
  template: z.string(),
  recipient: z.string(),
  subject: z.string(),
  // In clear only for messages enqueued before bodies were sealed (migration 019).
  body_text: z.string().nullable(),
  body_html: z.string().nullable(),
  body_sealed: z.instanceof(Buffer).nullable(),
  attempts: z.number(),
});
export type ClaimedMailRow = z.infer<typeof claimedMailRow>;

/** Stores a message to send, in the caller's transaction; its body is sealed already. */
export async function insertMail(
  db: CommonQueryMethods,
  input: {
    workspaceId: string | null;
    template: string;
    recipient: string;
    subject: string;
    bodySealed: Buffer;
  },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    INSERT INTO mail_outbox (workspace_id, template, recipient, subject, body_sealed)
    VALUES (${input.workspaceId}, ${input.template}, ${input.recipient}, ${input.subject},
            ${sql.binary(input.bodySealed)})`);
}

/**
 * Claims the oldest due message that nobody holds, leased for `leaseMs`, and counts the
 * attempt; null when none is due.
 */
export async function claimDueMail(
  db: CommonQueryMethods,
  input: { leaseMs: number; maxAttempts: number },
): Promise<ClaimedMailRow | null> {
  // A statement of its own: the row lock lasts only for the claim; the lease (locked_until)
  // is what keeps other senders away while the message is sent. SKIP LOCKED lets concurrent
  // claims pass each other instead of queueing on the same row.
  return db.maybeOne(sql.type(claimedMailRow)`
    UPDATE mail_outbox
    SET locked_until = now() + ${sql.interval({ seconds: input.leaseMs / 1000 })},
        attempts = attempts + 1
    WHERE id = (
      SELECT id FROM mail_outbox
      WHERE sent_at IS NULL
        AND given_up_at IS NULL
        AND next_attempt_at <= now()
        AND (locked_until IS NULL OR locked_until < now())
        AND attempts < ${input.maxAttempts}
      ORDER BY id
      FOR UPDATE SKIP LOCKED
      LIMIT 1
    )
    RETURNING id, template, recipient, subject, body_text, body_html, body_sealed, attempts`);
}

/** Marks a message sent and erases its bodies: they may hold codes and links. */
export async function markMailSent(db: CommonQueryMethods, id: bigint): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE mail_outbox
    SET sent_at = now(), locked_until = NULL, body_text = NULL, body_html = NULL,
        body_sealed = NULL
    WHERE id = ${id} AND sent_at IS NULL`);
}

/**
 * Gives a message up with its last error and erases its bodies, if the claim that made
 * attempt `attempts` still holds it.
 */
export async function giveUpMail(
  db: CommonQueryMethods,
  input: { id: bigint; attempts: number; error: string },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE mail_outbox
    SET locked_until = NULL, last_error = ${input.error}, given_up_at = now(),
        body_text = NULL, body_html = NULL, body_sealed = NULL
    WHERE id = ${input.id} AND attempts = ${input.attempts} AND sent_at IS NULL`);
}

/**
 * Releases a message for another attempt after `delayMs`, with its last error, if the claim
 * that made attempt `attempts` still holds it.
 */
export async function retryMailLater(
  db: CommonQueryMethods,
  input: { id: bigint; attempts: number; error: string; delayMs: number },
): Promise<void> {
  await db.query(sql.type(voidRow)`
    UPDATE mail_outbox
    SET locked_until = NULL,
        last_error = ${input.error},
        next_attempt_at = now() + ${sql.interval({ seconds: input.delayMs / 1000 })}
    WHERE id = ${input.id} AND attempts = ${input.attempts} AND sent_at IS NULL`);
}

/** Messages not sent yet, of every instance and workspace. */
export async function countUnsentMail(db: CommonQueryMethods): Promise<number> {
  return db.oneFirst(sql.type(countRow)`
    SELECT count(*)::int AS count FROM mail_outbox WHERE sent_at IS NULL`);
}

/** Deletes up to `limit` messages sent before `before`; answers how many. */
export async function sweepSentMail(
  db: CommonQueryMethods,
  input: { before: Date; limit: number },
): Promise<number> {
  const result = await db.query(sql.type(voidRow)`
    DELETE FROM mail_outbox WHERE id IN (
      SELECT id FROM mail_outbox WHERE sent_at < ${sql.timestamp(input.before)} LIMIT ${input.limit})`);
  return result.rowCount;
}
