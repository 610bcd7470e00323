import { randomUUID } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import nodemailer, { type SendMailOptions, type Transporter } from "nodemailer";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";

export interface MailMessage {
  readonly to: string;
  readonly subject: string;
  readonly text: string;
  readonly html?: string;
}

export interface Mailer {
  /**
   * Hands one message to the transport; throws when it was not accepted. Aborting `signal`
   * gives up on it: it leaves the queue, or its connection is closed before the server
   * accepts it, and the send rejects.
   */
  send(message: MailMessage, signal?: AbortSignal): Promise<{ messageId: string }>;
  close(): void;
}

/**
 * nodemailer over SMTP, from a URL or host, port and credentials, with pooled connections (as
 * many as the outbox sends at once), so consecutive messages skip the connection set-up.
 */
export function smtpMailer(
  config: Pick<Config, "smtp" | "mailFrom"> & Partial<Pick<Config, "mailConcurrency">>,
): Mailer {
  const smtp = config.smtp;
  if (!smtp) throw new Error("smtpMailer needs SMTP settings");
  const pool = { pool: true, maxConnections: config.mailConcurrency ?? 4 } as const;
  const transport: Transporter =
    "url" in smtp
      ? nodemailer.createTransport({ url: smtp.url, ...pool })
      : nodemailer.createTransport({
          host: smtp.host,
          port: smtp.port,
          secure: smtp.secure,
          auth: smtp.user ? { user: smtp.user, pass: smtp.password ?? "" } : undefined,
          ...pool,
        });
  return {
    async send(message, signal) {
      // nodemailer's SMTP transports honour `signal` (its types do not name it yet).
      const info = await transport.sendMail({
        from: config.mailFrom,
        ...message,
        ...(signal ? { signal } : {}),
      } as SendMailOptions);
      return { messageId: String(info.messageId) };
    },
    close: () => transport.close(),
  };
}

/**
 * For development without an SMTP server: each message is printed to the console (recipient,
 * subject, text with its code or link) and written as an .eml file under <dataDir>/outbox.
 */
export function devOutboxMailer(
  config: Pick<Config, "dataDir" | "mailFrom">,
  logger: Logger,
  print: (text: string) => void = (text) => process.stdout.write(text),
): Mailer {
  const dir = path.resolve(config.dataDir, "outbox");
  const transport = nodemailer.createTransport({
    streamTransport: true,
    buffer: true,
    newline: "unix",
  });
  return {
    async send(message) {
      const info = await transport.sendMail({ from: config.mailFrom, ...message });
      await mkdir(dir, { recursive: true });
      const file = path.join(
        dir,
        `${new Date().toISOString().replace(/[:.]/g, "-")}-${randomUUID().slice(0, 8)}.eml`,
      );
      await writeFile(file, info.message as Buffer);
      print(
        `\n--- dev outbox: ${file}\nTo: ${message.to}\nSubject: ${message.subject}\n\n${message.text}\n---\n`,
      );
      logger.info({ to: message.to, subject: message.subject, file }, "mail written to dev outbox");
      return { messageId: String(info.messageId) };
    },
    close: () => transport.close(),
  };
}

export function createMailer(config: Config, logger: Logger): Mailer {
  return config.smtp ? smtpMailer(config) : devOutboxMailer(config, logger);
}
