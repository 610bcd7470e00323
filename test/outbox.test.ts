import { randomBytes } from "node:crypto";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { createPool } from "slonik";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { configFromEnv } from "../src/config.js";
import { loadMigrations, migrate } from "../src/db/migrate.js";
import { type Database, openDatabase } from "../src/db/pool.js";
import { sql } from "../src/db/sql.js";
import { createLogger } from "../src/log.js";
import { type Mailer, smtpMailer } from "../src/mail/mailer.js";
import { enqueueMail, MailBodyKey, OutboxSender } from "../src/mail/outbox.js";
import {
  defaultTemplatesDir,
  MailTemplateError,
  MailTemplates,
  mailTemplateNames,
} from "../src/mail/templates.js";
import { insertWorkspace } from "../src/repositories/workspaces.js";
import {
  externalDatabaseEnv,
  freshDatabaseUrl,
  usingExternalPostgres,
} from "./support/database.js";
import { startSmtpServer } from "./support/smtp.js";

let database: Database;
let dataDir: string;
let drop: () => Promise<void>;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let templates: MailTemplates;
const tempDirs: string[] = [];

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), "keygate-outbox-db-"));
  const db = await freshDatabaseUrl();
  drop = db.drop;
  database = await openDatabase(
    configFromEnv({ KEYGATE_DATA_DIR: dataDir, ...externalDatabaseEnv(db.url) }),
  );
  await migrate(database.url, await loadMigrations());
  templates = await MailTemplates.load();
  smtp = await startSmtpServer();
});

// Senders and mailers of a test are stopped after it, even when it fails half-way.
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await smtp?.stop();
  await database?.close();
  await drop?.();
  for (const dir of [dataDir, ...tempDirs]) await rm(dir, { recursive: true, force: true });
});

const silent = createLogger("silent");
const keyEncryptionKey = randomBytes(32);
const bodyKey = new MailBodyKey(keyEncryptionKey);
const mailFrom = "Keygate <auth@example.test>";

function mailerFor(url: string): Mailer {
  const mailer = smtpMailer({ smtp: { url }, mailFrom });
  cleanups.push(() => mailer.close());
  return mailer;
}

function sender(options: Partial<ConstructorParameters<typeof OutboxSender>[0]> = {}) {
  const s = new OutboxSender({
    pool: database.pool,
    mailer: mailerFor(smtp.url),
    logger: silent,
    bodyKey,
    pollIntervalMs: 50,
    ...options,
  });
  cleanups.push(() => s.stop());
  return s;
}

function vars(extra: Record<string, string>): Record<string, string> {
  return { product: "Keygate", workspace: "Acme", email: "ada@example.test", ...extra };
}

const outboxRow = z.object({
  id: z.bigint(),
  workspace_id: z.string().nullable(),
  template: z.string(),
  recipient: z.string(),
  subject: z.string(),
  body_text: z.string().nullable(),
  body_html: z.string().nullable(),
  body_sealed: z.instanceof(Buffer).nullable(),
  attempts: z.number(),
  locked_until: z.number().nullable(),
  sent_at: z.number().nullable(),
  given_up_at: z.number().nullable(),
  last_error: z.string().nullable(),
});

function rowsFor(recipient: string) {
  return database.pool.any(sql.type(outboxRow)`
    SELECT id, workspace_id, template, recipient, subject, body_text, body_html, body_sealed,
           attempts, locked_until, sent_at, given_up_at, last_error
    FROM mail_outbox WHERE recipient = ${recipient} ORDER BY id`);
}

async function enqueueCommitted(
  to: string,
  template: Parameters<typeof enqueueMail>[3]["template"],
  extra: Record<string, string>,
  workspaceId: string | null = null,
): Promise<void> {
  await database.pool.transaction((tx) =>
    enqueueMail(tx, templates, bodyKey, {
      workspaceId,
      to,
      template,
      vars: vars({ email: to, ...extra }),
    }),
  );
}

/** `count` login-code messages to `<prefix>-<i>@example.test`, in one committed transaction. */
async function enqueueCodes(prefix: string, count: number, firstCode: number): Promise<string[]> {
  const recipients = Array.from({ length: count }, (_, i) => `${prefix}-${i}@example.test`);
  await database.pool.transaction(async (tx) => {
    for (const [i, to] of recipients.entries()) {
      await enqueueMail(tx, templates, bodyKey, {
        workspaceId: null,
        to,
        template: "login_code",
        vars: vars({ email: to, code: String(firstCode + i), minutes: "5" }),
      });
    }
  });
  return recipients;
}

async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(20);
  }
}

/** The message as a reader sees it: quoted-printable decoded (enough for ASCII content). */
function unfolded(raw: string): string {
  return raw
    .replace(/=\r?\n/g, "")
    .replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

function deliveredTo(address: string): number {
  return smtp.received.filter((m) => m.to.includes(address)).length;
}

/** A loopback port where nothing listens (until `forward` opens it). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Opens `port` and relays every connection to the SMTP server: the server "comes back". */
async function forward(port: number, targetPort: number): Promise<() => Promise<void>> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}

function capturingLogger() {
  const lines: string[] = [];
  const logger = createLogger(
    "trace",
    new Writable({
      write(chunk, _encoding, callback) {
        lines.push(String(chunk));
        callback();
      },
    }),
  );
  return { logger, lines };
}

describe(`mail outbox (${usingExternalPostgres ? "PostgreSQL" : "embedded PGlite"})`, () => {
  it("delivers mail enqueued in a committed transaction, then erases its bodies", async () => {
    const workspace = await insertWorkspace(database.pool, { name: "Acme", slug: "acme-commit" });
    const to = "committed@example.test";
    await enqueueCommitted(to, "login_code", { code: "493817", minutes: "5" }, workspace.id);

    const s = sender();
    s.start();
    s.wake();
    const mail = await smtp.waitFor((m) => m.to.includes(to));
    await s.stop();

    expect(mail.from).toBe("auth@example.test");
    expect(mail.raw).toContain("Subject: Your sign-in code for Keygate");
    expect(unfolded(mail.raw)).toContain("493817");
    const [row] = await rowsFor(to);
    expect(row).toMatchObject({
      workspace_id: workspace.id,
      template: "login_code",
      subject: "Your sign-in code for Keygate",
      attempts: 1,
      body_text: null,
      body_html: null,
      body_sealed: null,
      locked_until: null,
      last_error: null,
    });
    expect(row?.sent_at).not.toBeNull();
    expect(s.stats).toEqual({ sent: 1, failed: 0 });
  });

  it("never delivers mail whose transaction rolled back", async () => {
    const to = "rolled-back@example.test";
    await expect(
      database.pool.transaction(async (tx) => {
        await enqueueMail(tx, templates, bodyKey, {
          workspaceId: null,
          to,
          template: "login_code",
          vars: vars({ email: to, code: "111111", minutes: "5" }),
        });
        throw new Error("the state change failed");
      }),
    ).rejects.toThrow("the state change failed");
    expect(await rowsFor(to)).toEqual([]);

    // A message enqueued afterwards goes out; the rolled-back one never does.
    const marker = "after-rollback@example.test";
    await enqueueCommitted(marker, "login_code", { code: "222222", minutes: "5" });
    const s = sender();
    s.start();
    s.wake();
    await smtp.waitFor((m) => m.to.includes(marker));
    await s.stop();
    expect(deliveredTo(to)).toBe(0);
  });

  it("SECURITY.md 25: keeps mail while SMTP is down and delivers it once when it is back", async () => {
    const port = await freePort();
    const { logger, lines } = capturingLogger();
    const to = "outage@example.test";
    const link = "https://app.example.test/reset-password?token=SeCrEtLinkToken0123456789";
    await enqueueCommitted(to, "password_reset_link", { link, minutes: "30" });

    const s = sender({
      mailer: mailerFor(`smtp://127.0.0.1:${port}`),
      logger,
      pollIntervalMs: 20,
      baseBackoffMs: 20,
      maxBackoffMs: 100,
    });
    s.start();
    s.wake();
    await eventually(async () => ((await rowsFor(to))[0]?.attempts ?? 0) >= 3);
    const [failing] = await rowsFor(to);
    expect(failing?.sent_at).toBeNull();
    // SECURITY.md 37: what waits in the table is sealed; only the key opens it.
    expect(failing?.body_text).toBeNull();
    expect(failing?.body_html).toBeNull();
    expect(failing?.body_sealed?.includes("SeCrEtLinkToken")).toBe(false);
    expect(
      bodyKey.open(
        failing as { template: string; recipient: string },
        failing?.body_sealed as Buffer,
      ).text,
    ).toContain(link);
    expect(failing?.last_error).toMatch(/ECONNREFUSED/);
    expect(failing?.last_error).not.toContain("SeCrEtLinkToken");
    expect(deliveredTo(to)).toBe(0);

    const close = await forward(port, smtp.port);
    cleanups.push(close);
    const mail = await smtp.waitFor((m) => m.to.includes(to));
    await s.stop();

    expect(unfolded(mail.raw)).toContain(link);
    expect(deliveredTo(to)).toBe(1);
    const [row] = await rowsFor(to);
    expect(row?.sent_at).not.toBeNull();
    expect(row?.body_text).toBeNull();
    expect(row?.body_html).toBeNull();
    expect(row?.body_sealed).toBeNull();
    expect(s.stats.sent).toBe(1);
    expect(s.stats.failed).toBeGreaterThanOrEqual(2);

    // The log tells what failed and where it was going, never what the mail said or to whom.
    const log = lines.join("");
    expect(log).toContain("delivery failed, will retry");
    expect(log).toContain('"recipientDomain":"example.test"');
    expect(log).toContain('"template":"password_reset_link"');
    expect(log).not.toContain("SeCrEtLinkToken");
    expect(log).not.toContain(to);
  });

  it("retries a message whose sender died once its lease runs out", async () => {
    const to = "orphaned@example.test";
    await enqueueCommitted(to, "magic_link", {
      link: "https://app.example.test/magic?token=x",
      minutes: "15",
    });
    // What a sender that claimed the message and was killed leaves behind.
    await database.pool.query(sql.unsafe`
      UPDATE mail_outbox
      SET locked_until = now() + interval '1500 milliseconds', attempts = attempts + 1
      WHERE recipient = ${to}`);

    const s = sender({ pollIntervalMs: 20 });
    s.start();
    s.wake();
    await sleep(300);
    expect(deliveredTo(to)).toBe(0);
    await smtp.waitFor((m) => m.to.includes(to));
    await s.stop();
    const [row] = await rowsFor(to);
    expect(row?.attempts).toBe(2);
    expect(row?.sent_at).not.toBeNull();
    expect(deliveredTo(to)).toBe(1);
  });

  it("two senders on one database deliver each of 30 messages exactly once", async () => {
    const recipients = await enqueueCodes("bulk", 30, 100000);
    // The second instance has a pool of its own, as another process would.
    const otherPool = await createPool(database.url, { maxPoolSize: 3 });
    cleanups.push(() => otherPool.end());
    const a = sender({ pollIntervalMs: 20 });
    const b = sender({ pool: otherPool, pollIntervalMs: 20 });
    a.start();
    b.start();
    a.wake();
    b.wake();
    await eventually(() => recipients.every((to) => deliveredTo(to) >= 1));
    await Promise.all([a.stop(), b.stop()]);

    for (const to of recipients) expect(deliveredTo(to), to).toBe(1);
    expect(a.stats.sent + b.stats.sent).toBe(30);
    const rows = await database.pool.any(sql.type(outboxRow)`
      SELECT id, workspace_id, template, recipient, subject, body_text, body_html, body_sealed,
             attempts, locked_until, sent_at, given_up_at, last_error
      FROM mail_outbox WHERE recipient LIKE 'bulk-%'`);
    expect(rows).toHaveLength(30);
    for (const row of rows) {
      expect(row.attempts).toBe(1);
      expect(row.sent_at).not.toBeNull();
      expect(row.body_text).toBeNull();
      expect(row.body_sealed).toBeNull();
    }
  });

  it("sends up to `concurrency` messages at once over pooled connections, each once", async () => {
    const slow = await startSmtpServer({ acceptDelayMs: 200 });
    cleanups.push(() => slow.stop());
    const recipients = await enqueueCodes("burst", 12, 200000);
    // One wake: the loop that claims the first message wakes the next, and so on.
    const s = sender({ mailer: mailerFor(slow.url), concurrency: 4, pollIntervalMs: 60_000 });
    s.start();
    s.wake();
    const count = (to: string) => slow.received.filter((m) => m.to.includes(to)).length;
    await eventually(() => recipients.every((to) => count(to) >= 1));
    await s.stop();

    for (const to of recipients) expect(count(to), to).toBe(1);
    expect(s.stats.sent).toBe(12);
    // Several at once, never more than asked for, over no more connections than that.
    expect(slow.stats.mostAtOnce).toBeGreaterThan(1);
    expect(slow.stats.mostAtOnce).toBeLessThanOrEqual(4);
    expect(slow.stats.connections).toBeLessThanOrEqual(4);
  });

  it("with concurrency 1 sends one message at a time", async () => {
    const slow = await startSmtpServer({ acceptDelayMs: 50 });
    cleanups.push(() => slow.stop());
    const recipients = await enqueueCodes("single", 4, 300000);
    const s = sender({ mailer: mailerFor(slow.url), concurrency: 1 });
    s.start();
    s.wake();
    await eventually(() => recipients.every((to) => slow.received.some((m) => m.to.includes(to))));
    await s.stop();
    expect(slow.stats.mostAtOnce).toBe(1);
    expect(slow.stats.connections).toBe(1);
  });

  it("calls off a send that outlives its timeout, so the retry is the only delivery", async () => {
    // The first message is held for 1.5 s; the sender gives up on a send after 250 ms.
    const stalling = await startSmtpServer({ acceptDelayMs: (i) => (i === 0 ? 1_500 : 0) });
    cleanups.push(() => stalling.stop());
    const to = "stalled@example.test";
    await enqueueCommitted(to, "magic_link", {
      link: "https://app.example.test/magic?token=x",
      minutes: "15",
    });
    const s = sender({
      mailer: mailerFor(stalling.url),
      leaseMs: 500,
      pollIntervalMs: 20,
      baseBackoffMs: 20,
      maxBackoffMs: 100,
    });
    s.start();
    s.wake();
    await stalling.waitFor((m) => m.to.includes(to));
    // Past the moment the held message would have been accepted, had its send gone on.
    await sleep(2_000);
    expect(stalling.received.filter((m) => m.to.includes(to))).toHaveLength(1);
    const [row] = await rowsFor(to);
    expect(row?.sent_at).not.toBeNull();
    expect(row?.attempts).toBe(2);
    expect(row?.last_error).toMatch(/timed out/);
  });

  it("SECURITY.md 37: gives up after maxAttempts, keeping the message and its error, erasing its body", async () => {
    const port = await freePort();
    const to = "never@example.test";
    await enqueueCommitted(to, "password_changed", { time: "2025-01-01 12:00 UTC" });
    const s = sender({
      mailer: mailerFor(`smtp://127.0.0.1:${port}`),
      pollIntervalMs: 20,
      baseBackoffMs: 10,
      maxBackoffMs: 20,
      maxAttempts: 2,
    });
    s.start();
    s.wake();
    await eventually(() => s.stats.failed >= 2);
    await sleep(200);
    await s.stop();
    const [row] = await rowsFor(to);
    expect(row?.attempts).toBe(2);
    expect(row?.sent_at).toBeNull();
    expect(row?.locked_until).toBeNull();
    expect(row?.last_error).toMatch(/ECONNREFUSED/);
    expect(row?.given_up_at).not.toBeNull();
    expect(row?.body_text).toBeNull();
    expect(row?.body_html).toBeNull();
    expect(row?.body_sealed).toBeNull();
    expect(s.stats.failed).toBe(2);
    // A sender with a higher limit finds nothing to send: given up is final.
    const later = sender({ maxAttempts: 5, pollIntervalMs: 20 });
    later.start();
    later.wake();
    await sleep(200);
    await later.stop();
    expect(later.stats).toEqual({ sent: 0, failed: 0 });
  });

  it("keeps running when the database fails, and stops cleanly", async () => {
    const deadPool = await createPool(database.url, { maxPoolSize: 1 });
    await deadPool.end();
    const { logger, lines } = capturingLogger();
    const s = sender({ pool: deadPool, logger, pollIntervalMs: 20 });
    s.start();
    await eventually(() => lines.filter((l) => l.includes("could not process")).length >= 2);
    await s.stop();
    expect(s.stats).toEqual({ sent: 0, failed: 0 });
  });

  it("SECURITY.md 37: a body sealed for one row does not open on another, nor under another key", async () => {
    const to = "sealed@example.test";
    await enqueueCommitted(to, "magic_link", {
      link: "https://app.example.test/magic-link?token=MovedAcrossRows0123",
      minutes: "15",
    });
    const [row] = await rowsFor(to);
    const sealed = row?.body_sealed as Buffer;
    expect(bodyKey.open({ template: "magic_link", recipient: to }, sealed).text).toContain(
      "MovedAcrossRows0123",
    );
    expect(() =>
      bodyKey.open({ template: "magic_link", recipient: "thief@example.test" }, sealed),
    ).toThrow(/does not decrypt/);
    expect(() => bodyKey.open({ template: "login_code", recipient: to }, sealed)).toThrow(
      /does not decrypt/,
    );
    expect(() =>
      new MailBodyKey(randomBytes(32)).open({ template: "magic_link", recipient: to }, sealed),
    ).toThrow(/does not decrypt/);
    // Redirected to another recipient in the table, it is never sent to them in clear.
    const thief = "thief@example.test";
    await database.pool.query(sql.unsafe`
      UPDATE mail_outbox SET recipient = ${thief} WHERE id = ${row?.id as bigint}`);
    const s = sender({ maxAttempts: 1, pollIntervalMs: 20 });
    s.start();
    s.wake();
    await eventually(() => s.stats.failed >= 1);
    await s.stop();
    expect(deliveredTo(thief)).toBe(0);
    const [after] = await rowsFor(thief);
    expect(after?.last_error).toMatch(/does not decrypt/);
    expect(after?.body_sealed).toBeNull();
  });

  it("SECURITY.md 37: delivers a message stored in clear before bodies were sealed, then erases it", async () => {
    const to = "legacy@example.test";
    // What migration 019 leaves of a message enqueued before it: the body in clear.
    await database.pool.query(sql.unsafe`
      INSERT INTO mail_outbox (workspace_id, template, recipient, subject, body_text, body_html)
      VALUES (NULL, 'login_code', ${to}, 'Your sign-in code for Keygate', 'Your code: 640213',
              '<p>Your code: 640213</p>')`);
    const s = sender();
    s.start();
    s.wake();
    const mail = await smtp.waitFor((m) => m.to.includes(to));
    await s.stop();
    expect(unfolded(mail.raw)).toContain("640213");
    const [row] = await rowsFor(to);
    expect(row?.sent_at).not.toBeNull();
    expect([row?.body_text, row?.body_html, row?.body_sealed]).toEqual([null, null, null]);
  });

  it("deletes a workspace's mail with the workspace", async () => {
    const workspace = await insertWorkspace(database.pool, { name: "Gone", slug: "gone" });
    const to = "tenant@example.test";
    await enqueueCommitted(to, "login_code", { code: "333333", minutes: "5" }, workspace.id);
    expect(await rowsFor(to)).toHaveLength(1);
    await database.pool.query(sql.unsafe`DELETE FROM workspaces WHERE id = ${workspace.id}`);
    expect(await rowsFor(to)).toEqual([]);
  });

  it("refuses a recipient that is not exactly one address", async () => {
    for (const to of ["a@example.test, b@example.test", "a@example.test\r\nBcc: b@x.test", "x"]) {
      await expect(
        database.pool.transaction((tx) =>
          enqueueMail(tx, templates, bodyKey, {
            workspaceId: null,
            to,
            template: "login_code",
            vars: vars({ code: "1", minutes: "5" }),
          }),
        ),
      ).rejects.toThrow(/not one email address/);
    }
  });
});

describe("mail templates", () => {
  const sample: Record<string, string> = {
    product: "Keygate",
    workspace: "Acme",
    email: "ada@example.test",
    code: "028461",
    minutes: "10",
    days: "7",
    link: "https://app.example.test/x?token=abc",
    login_link: "https://app.example.test/login",
    reset_link: "https://app.example.test/reset-password",
    join_link: "https://app.example.test/accept-invitation?token=abc",
    time: "2025-01-01 12:00 UTC",
    change: "A passkey was added",
  };

  it("renders every built-in template: subject without secrets, both parts, no tracking", () => {
    for (const name of mailTemplateNames) {
      const mail = templates.render(name, sample);
      expect(mail.subject, name).toMatch(/\S/);
      for (const secret of ["028461", "token=abc", "/login", "/reset-password"]) {
        expect(mail.subject, name).not.toContain(secret);
      }
      expect(mail.text, name).toContain("Keygate");
      expect(mail.html, name).toContain("Acme");
      expect(mail.html, name).not.toMatch(/<img|src=|<script/i);
      expect(`${mail.text}${mail.html}`, name).not.toMatch(/\{\{|\}\}/);
    }
    expect(templates.render("login_code", sample).text).toContain("028461");
    expect(templates.render("magic_link", sample).text).toContain(sample.link);
  });

  it("escapes values in the HTML part and keeps them verbatim in the text part", () => {
    const workspace = `<script>alert("x")</script> & Co`;
    const mail = templates.render("magic_link", {
      ...sample,
      workspace,
      link: "https://app.example.test/m?a=1&token=abc",
    });
    expect(mail.html).not.toContain("<script>");
    expect(mail.html).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2F;script&gt; &amp; Co");
    expect(mail.html).toContain(
      'href="https:&#x2F;&#x2F;app.example.test&#x2F;m?a&#x3D;1&amp;token',
    );
    expect(mail.text).toContain(workspace);
    expect(mail.text).toContain("https://app.example.test/m?a=1&token=abc");
  });

  it("keeps a subject on one line whatever the values hold", async () => {
    const dir = await templateDir({
      "login_code.txt": "Subject: Sign in to {{workspace}}\n\nCode: {{code}}\n",
      "login_code.html": "<p>Code: {{code}}</p>\n",
    });
    const loaded = await MailTemplates.load(dir);
    expect(
      loaded.render("login_code", { ...sample, workspace: "Acme\r\nBcc: evil@example.test" })
        .subject,
    ).toBe("Sign in to Acme Bcc: evil@example.test");
  });

  it("refuses to render without a variable the template has", () => {
    const { code: _code, ...withoutCode } = sample;
    expect(() => templates.render("login_code", withoutCode)).toThrow(/login_code needs code/);
  });

  it("an override directory replaces one template and leaves the others", async () => {
    const dir = await templateDir({
      "login_code.txt": "Subject: {{workspace}} sign-in\n\nYour code for {{workspace}}: {{code}}\n",
      "login_code.html": "<p>Your code for {{workspace}}: <b>{{code}}</b></p>\n",
    });
    const loaded = await MailTemplates.load(dir);
    expect(loaded.render("login_code", sample)).toEqual({
      subject: "Acme sign-in",
      text: "Your code for Acme: 028461\n",
      html: "<p>Your code for Acme: <b>028461</b></p>\n",
    });
    expect(loaded.render("magic_link", sample)).toEqual(templates.render("magic_link", sample));
  });

  it("load fails naming the file when a template misses its HTML part", async () => {
    const dir = await templateDir({
      "login_code.txt": "Subject: Code\n\nYour code: {{code}}\n",
    });
    const error = await MailTemplates.load(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MailTemplateError);
    expect((error as Error).message).toContain(path.join(dir, "login_code.html"));
    expect((error as Error).message).toMatch(/is missing/);

    // The same check holds for the built-in set.
    const builtInDir = await mkdtemp(path.join(tmpdir(), "keygate-templates-"));
    tempDirs.push(builtInDir);
    await cp(defaultTemplatesDir, builtInDir, { recursive: true });
    await rm(path.join(builtInDir, "password_changed.html"));
    await expect(MailTemplates.load(undefined, { builtInDir })).rejects.toThrow(
      /password_changed\.html is missing/,
    );
  });

  it("load fails naming the file for a missing Subject line, a secret in the subject, an unknown variable or file", async () => {
    const cases: [Record<string, string>, RegExp][] = [
      [
        { "login_code.txt": "Your code: {{code}}\n", "login_code.html": "<p>{{code}}</p>" },
        /login_code\.txt must start with a "Subject: …" line/,
      ],
      [
        {
          "login_code.txt": "Subject: {{code}} is your code\n\nYour code: {{code}}\n",
          "login_code.html": "<p>{{code}}</p>",
        },
        /login_code\.txt uses \{\{code\}\} in its subject/,
      ],
      [
        {
          "login_code.txt": "Subject: Code\n\nYour code: {{code}}\n",
          "login_code.html": "<p>{{code}} {{password}}</p>",
        },
        /login_code\.html uses \{\{password\}\}/,
      ],
      [{ "login-code.txt": "Subject: Code\n\n{{code}}\n" }, /login-code\.txt matches no template/],
      [
        { "login_code.txt": "Subject: Code\n\n{{#code}}\n", "login_code.html": "<p>{{code}}</p>" },
        /login_code\.txt is not valid/,
      ],
    ];
    for (const [files, message] of cases) {
      const dir = await templateDir(files);
      await expect(MailTemplates.load(dir)).rejects.toThrow(message);
    }
  });
});

async function templateDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "keygate-template-overrides-"));
  tempDirs.push(dir);
  for (const [name, content] of Object.entries(files)) {
    await writeFile(path.join(dir, name), content);
  }
  return dir;
}
