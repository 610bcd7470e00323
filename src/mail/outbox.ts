import type { CommonQueryMethods, DatabasePool } from "slonik";
import { SealingKey } from "../crypto/key-encryption.js";
import type { Logger } from "../log.js";
import {
  type ClaimedMailRow,
  claimDueMail,
  giveUpMail,
  insertMail,
  markMailSent,
  retryMailLater,
} from "../repositories/outbox.js";
import { isMailboxAddress } from "./address.js";
import type { Mailer } from "./mailer.js";
import type { MailTemplate, MailTemplates } from "./templates.js";

/**
 * The key that seals outbox bodies (derived from the key-encryption key), and the context a
 * body is bound to: a sealed body copied onto another row, for another template or
 * recipient, does not open.
 */
export class MailBodyKey {
  private readonly key: SealingKey;

  constructor(keyEncryptionKey: Buffer) {
    this.key = new SealingKey(keyEncryptionKey, "mail_outbox body v1");
  }

  seal(row: { template: string; recipient: string }, body: MailBody): Buffer {
    return this.key.seal(Buffer.from(JSON.stringify(body), "utf8"), context(row));
  }

  open(row: { template: string; recipient: string }, sealed: Uint8Array): MailBody {
    const body = JSON.parse(this.key.open(sealed, context(row)).toString("utf8")) as MailBody;
    if (typeof body.text !== "string") throw new Error("sealed mail body has no text part");
    return { text: body.text, html: typeof body.html === "string" ? body.html : null };
  }
}

interface MailBody {
  readonly text: string;
  readonly html: string | null;
}

const context = (row: { template: string; recipient: string }) =>
  JSON.stringify(["mail_outbox", row.template, row.recipient]);

/**
 * Renders a message and stores it in the outbox inside the caller's transaction, so the mail
 * exists if and only if the state change that asked for it commits. Call `OutboxSender.wake()`
 * after the commit to have it sent at once. The body (which may hold a code or link) is stored
 * sealed with `bodyKey`; the subject, which never holds one, in clear. Throws on an invalid
 * recipient or a missing template variable, which fails the caller's transaction.
 */
export async function enqueueMail(
  db: CommonQueryMethods,
  templates: MailTemplates,
  bodyKey: MailBodyKey,
  input: {
    workspaceId: string | null;
    to: string;
    template: MailTemplate;
    vars: Record<string, string>;
  },
): Promise<void> {
  // The grammar requests are validated with; anything else (a comma would reach several
  // mailboxes) is a bug upstream, never sent.
  if (!isMailboxAddress(input.to)) {
    throw new Error(`enqueueMail: the recipient of ${input.template} is not one email address`);
  }
  const mail = templates.render(input.template, input.vars);
  const sealed = bodyKey.seal(
    { template: input.template, recipient: input.to },
    { text: mail.text, html: mail.html },
  );
  await insertMail(db, {
    workspaceId: input.workspaceId,
    template: input.template,
    recipient: input.to,
    subject: mail.subject,
    bodySealed: sealed,
  });
}

export interface OutboxSenderOptions {
  readonly pool: DatabasePool;
  readonly mailer: Mailer;
  readonly logger: Logger;
  /** Opens the sealed bodies (the key enqueueMail sealed them with). */
  readonly bodyKey: MailBodyKey;
  /** Sleep between looks at the outbox when nothing is due and nobody called wake(). */
  readonly pollIntervalMs?: number;
  /**
   * How long a claimed message is reserved for this sender. A sender that dies loses its
   * messages to the others when the lease runs out; a send that takes longer than half of it
   * counts as failed, so the outcome is recorded while the lease still holds.
   */
  readonly leaseMs?: number;
  /** Attempts after which a message is given up: it stays with its error, unsent, its body erased. */
  readonly maxAttempts?: number;
  /** Delay before the first retry; doubled for each further one, with jitter. */
  readonly baseBackoffMs?: number;
  /** Upper bound of the retry delay. */
  readonly maxBackoffMs?: number;
  /** Messages this sender has in flight at once (each claimed and leased on its own). */
  readonly concurrency?: number;
}

const defaults = {
  pollIntervalMs: 1_000,
  leaseMs: 60_000,
  // With the defaults below, about two hours of retries before giving up.
  maxAttempts: 20,
  baseBackoffMs: 2_000,
  maxBackoffMs: 10 * 60_000,
  concurrency: 4,
};

/**
 * Delivers the outbox: each of `concurrency` loops claims one due message at a time under a
 * lease, hands it to the mailer, and records the outcome. Any number of senders, in this
 * process or others, can work on the same database; each message goes to one of them at a
 * time. An idle sender is woken one loop at a time, and a loop that found a message wakes the
 * next, so a single message costs one claim and a burst spreads over every loop.
 *
 * Delivery is at least once, as over SMTP it can only be: a message is sent again when its
 * sender dies (or loses the database) after the SMTP server accepted it and before sent_at was
 * stored. A send that outlives its timeout is called off (its connection is closed before
 * the server accepts), so it does not complete later beside the retry.
 */
export class OutboxSender {
  private readonly pool: DatabasePool;
  private readonly mailer: Mailer;
  private readonly logger: Logger;
  private readonly bodyKey: MailBodyKey;
  private readonly pollIntervalMs: number;
  private readonly leaseMs: number;
  private readonly sendTimeoutMs: number;
  private readonly maxAttempts: number;
  private readonly baseBackoffMs: number;
  private readonly maxBackoffMs: number;

  private readonly concurrency: number;
  private loop: Promise<void> | undefined;
  private stopping = false;
  // Counts wake() calls: a loop that sees it change while its claim query ran (which may have
  // missed the new row) looks again instead of sleeping, so no wake is lost.
  private wakes = 0;
  private readonly sleepers: (() => void)[] = [];
  private readonly counters = { sent: 0, failed: 0 };

  constructor(opts: OutboxSenderOptions) {
    this.pool = opts.pool;
    this.mailer = opts.mailer;
    this.logger = opts.logger;
    this.bodyKey = opts.bodyKey;
    this.pollIntervalMs = positive(opts.pollIntervalMs, defaults.pollIntervalMs, "pollIntervalMs");
    this.leaseMs = positive(opts.leaseMs, defaults.leaseMs, "leaseMs");
    this.sendTimeoutMs = Math.max(1, Math.floor(this.leaseMs / 2));
    this.maxAttempts = positive(opts.maxAttempts, defaults.maxAttempts, "maxAttempts");
    if (!Number.isInteger(this.maxAttempts)) {
      throw new RangeError("OutboxSender: maxAttempts must be a whole number");
    }
    this.baseBackoffMs = positive(opts.baseBackoffMs, defaults.baseBackoffMs, "baseBackoffMs");
    this.maxBackoffMs = positive(opts.maxBackoffMs, defaults.maxBackoffMs, "maxBackoffMs");
    this.concurrency = positive(opts.concurrency, defaults.concurrency, "concurrency");
    if (!Number.isInteger(this.concurrency)) {
      throw new RangeError("OutboxSender: concurrency must be a whole number");
    }
  }

  /** Starts the background loops; calling it again while they run does nothing. */
  start(): void {
    if (this.loop) return;
    this.stopping = false;
    this.loop = Promise.all(Array.from({ length: this.concurrency }, () => this.run())).then(
      () => undefined,
    );
  }

  /** Looks at the outbox now instead of at the next poll; call it after a commit that enqueued. */
  wake(): void {
    this.wakes += 1;
    this.sleepers.shift()?.();
  }

  /** Lets the messages being sent finish and their outcomes be stored, then resolves. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const wakeUp of this.sleepers.splice(0)) wakeUp();
    const loop = this.loop;
    this.loop = undefined;
    await loop;
  }

  /** Messages delivered, and delivery attempts that failed, by this sender since it was built. */
  get stats(): { sent: number; failed: number } {
    return { ...this.counters };
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      const wakes = this.wakes;
      let sentOne = false;
      try {
        sentOne = await this.sendNext(() => this.sleepers.shift()?.());
      } catch (error) {
        // Most likely the database; the next tick tries again.
        this.logger.error(
          { err: { message: (error as Error).message } },
          "mail outbox: could not process the outbox, retrying",
        );
      }
      // Keep going while messages are due; otherwise wait for the poll or a wake().
      if (!sentOne && !this.stopping && wakes === this.wakes) await this.sleep(this.pollIntervalMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        const i = this.sleepers.indexOf(done);
        if (i >= 0) this.sleepers.splice(i, 1);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.push(done);
    });
  }

  /**
   * Claims and sends one due message; false when none was due. `claimed` runs as soon as a
   * message is claimed (there may be more: another loop should look).
   */
  private async sendNext(claimed: () => void): Promise<boolean> {
    const row = await this.claim();
    if (!row) return false;
    claimed();
    const context = {
      outboxId: row.id.toString(),
      template: row.template,
      recipientDomain: row.recipient.slice(row.recipient.lastIndexOf("@") + 1),
      attempt: row.attempts,
    };
    try {
      const body = this.bodyOf(row);
      await withTimeout(
        (signal) =>
          this.mailer.send(
            {
              to: row.recipient,
              subject: row.subject,
              text: body.text,
              ...(body.html === null ? {} : { html: body.html }),
            },
            signal,
          ),
        this.sendTimeoutMs,
      );
    } catch (error) {
      await this.recordFailure(row, context, errorMessage(error));
      return true;
    }
    await this.recordSent(row, context);
    return true;
  }

  /** The body in clear, only in memory and only while it is being sent. */
  private bodyOf(row: ClaimedMailRow): MailBody {
    if (row.body_sealed) return this.bodyKey.open(row, row.body_sealed);
    if (row.body_text !== null) return { text: row.body_text, html: row.body_html };
    throw new Error("the message has no body");
  }

  private claim(): Promise<ClaimedMailRow | null> {
    // On the pool, outside any transaction: the claim's row lock must end with its statement.
    return claimDueMail(this.pool, { leaseMs: this.leaseMs, maxAttempts: this.maxAttempts });
  }

  private async recordSent(row: ClaimedMailRow, context: object): Promise<void> {
    this.counters.sent += 1;
    try {
      // Recorded even if the lease ran out meanwhile: the message did go out, and marking it
      // spares the recipient a copy. The bodies go: they may hold codes and links.
      await markMailSent(this.pool, row.id);
    } catch (error) {
      this.logger.error(
        { ...context, err: { message: errorMessage(error) } },
        "mail outbox: mail was sent but could not be marked; it will be sent again after its lease",
      );
      return;
    }
    this.logger.info(context, "mail outbox: mail sent");
  }

  private async recordFailure(
    row: ClaimedMailRow,
    context: object,
    message: string,
  ): Promise<void> {
    this.counters.failed += 1;
    const givingUp = row.attempts >= this.maxAttempts;
    const delayMs = this.backoffMs(row.attempts);
    // Both updates only while this sender still holds the claim: after its lease ran out, another sender
    // may have claimed the row (attempts moved on) and owns its state now.
    if (givingUp) {
      // Nothing will send it any more, so its body (a code or link) goes.
      await giveUpMail(this.pool, { id: row.id, attempts: row.attempts, error: message });
      this.logger.error(
        { ...context, err: { message } },
        "mail outbox: delivery failed for the last time; the message stays in the outbox unsent, its body erased",
      );
      return;
    }
    await retryMailLater(this.pool, {
      id: row.id,
      attempts: row.attempts,
      error: message,
      delayMs,
    });
    this.logger.warn(
      { ...context, retryInMs: delayMs, err: { message } },
      "mail outbox: delivery failed, will retry",
    );
  }

  /** Exponential in the attempt number, capped, with the upper half randomised ("equal jitter"). */
  private backoffMs(attempt: number): number {
    const exponential = this.baseBackoffMs * 2 ** Math.min(attempt - 1, 30);
    const capped = Math.min(this.maxBackoffMs, exponential);
    return Math.round(capped / 2 + Math.random() * (capped / 2));
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`OutboxSender: ${name} must be a positive number`);
  }
  return value;
}

/**
 * The transport's message only, shortened: it is stored and logged, and must stay a
 * diagnosis, never a copy of the mail.
 */
function errorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.length > 500 ? `${message.slice(0, 500)}…` : message;
}

/**
 * Runs `send`, failing it after `ms`. The timeout also aborts the send's signal, so a send the
 * transport still holds (queued, or stalled on a slow server) is called off rather than left
 * to complete later, when the outbox has already recorded it as failed and will send it again.
 */
function withTimeout<T>(send: (signal: AbortSignal) => Promise<T>, ms: number): Promise<T> {
  const abort = new AbortController();
  const promise = send(abort.signal);
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      const error = new Error(`mail send timed out after ${ms} ms`);
      abort.abort(error);
      reject(error);
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
