import type { AddressInfo } from "node:net";
import { SMTPServer } from "smtp-server";

export interface ReceivedMail {
  readonly from: string;
  readonly to: readonly string[];
  /** The whole RFC 5322 message as received. */
  readonly raw: string;
}

/**
 * A real SMTP server on a loopback port that keeps what it receives; `acceptDelayMs` holds
 * each message that long before accepting it (a slow server), or as long as it says for the
 * message's number (0 for the first). A message whose client hung up while it was held is not
 * kept: the server never said it took it. `stats` counts the connections it accepted and the
 * most messages it was receiving at once.
 */
export async function startSmtpServer(
  options: { acceptDelayMs?: number | ((index: number) => number) } = {},
): Promise<{
  url: string;
  port: number;
  received: ReceivedMail[];
  stats: { connections: number; mostAtOnce: number };
  waitFor(predicate: (mail: ReceivedMail) => boolean, timeoutMs?: number): Promise<ReceivedMail>;
  stop(): Promise<void>;
}> {
  const received: ReceivedMail[] = [];
  const waiters: { predicate: (m: ReceivedMail) => boolean; resolve: (m: ReceivedMail) => void }[] =
    [];
  const stats = { connections: 0, mostAtOnce: 0 };
  let atOnce = 0;
  let messages = 0;
  const closed = new Set<string>();
  const delayOf = (index: number) =>
    typeof options.acceptDelayMs === "function"
      ? options.acceptDelayMs(index)
      : (options.acceptDelayMs ?? 0);
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS", "AUTH"],
    logger: false,
    onConnect(_session, callback) {
      stats.connections += 1;
      callback();
    },
    onClose(session) {
      closed.add(session.id);
    },
    onData(stream, session, callback) {
      atOnce += 1;
      stats.mostAtOnce = Math.max(stats.mostAtOnce, atOnce);
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      const delay = delayOf(messages++);
      stream.on("end", async () => {
        if (delay > 0) await new Promise((r) => setTimeout(r, delay));
        if (closed.has(session.id)) {
          atOnce -= 1;
          return;
        }
        const mail: ReceivedMail = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString("utf8"),
        };
        atOnce -= 1;
        received.push(mail);
        for (const w of [...waiters]) {
          if (w.predicate(mail)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(mail);
          }
        }
        callback();
      });
    },
  });
  // A client that dies mid-message (an instance killed while sending) resets its connection;
  // smtp-server reports that as an error event, which is the client's business, not the sink's:
  // unheard, it would end the test process.
  server.on("error", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.server.address() as AddressInfo).port;
  return {
    url: `smtp://127.0.0.1:${port}`,
    port,
    received,
    stats,
    waitFor(predicate, timeoutMs = 10_000) {
      const found = received.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no matching mail arrived")), timeoutMs);
        waiters.push({
          predicate,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
        });
      });
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The decoded text of a received message (quoted-printable soft breaks and escapes undone). */
export function mailText(mail: ReceivedMail): string {
  return mail.raw
    .replace(/=\r?\n/g, "")
    .replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

/** The first 6-digit code in a message. */
export function codeIn(mail: ReceivedMail): string {
  // The templates put a code alone on its line, indented.
  const match = /^ {4}(\d{6})\r?$/m.exec(mailText(mail));
  if (!match?.[1]) throw new Error("no code in the message");
  return match[1];
}

/** The first link with a token in a message, and the token. */
export function linkIn(mail: ReceivedMail): { url: string; token: string } {
  const match = /(https?:\/\/[^\s"<>]+[?&]token=([A-Za-z0-9_-]+))/.exec(mailText(mail));
  if (!match?.[1] || !match[2]) throw new Error("no link in the message");
  return { url: match[1], token: match[2] };
}
