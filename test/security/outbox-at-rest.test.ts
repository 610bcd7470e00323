import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AdminService } from "../../gen/keygate/v1/admin_service_pb.js";
import { AuthService } from "../../gen/keygate/v1/auth_service_pb.js";
import { Role } from "../../gen/keygate/v1/types_pb.js";
import { loadSecrets } from "../../src/crypto/secrets.js";
import { sql } from "../../src/db/sql.js";
import { MailBodyKey } from "../../src/mail/outbox.js";
import { usingExternalPostgres } from "../support/database.js";
import { startTestKeygate, type TestKeygate } from "../support/server.js";
import { linkIn, startSmtpServer } from "../support/smtp.js";
import { startTcpProxy } from "../support/tcp-proxy.js";

// SECURITY.md 37: a reader of the database (or of a dump) finds no code or link in the mail
// outbox, neither while SMTP is down nor after delivery.

let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let relay: Awaited<ReturnType<typeof startTcpProxy>>;
let keygate: TestKeygate;
const publicUrl = "https://app.example.test";

beforeAll(async () => {
  smtp = await startSmtpServer();
  // Keygate's SMTP server is this relay, down until the test brings it back.
  relay = await startTcpProxy({ host: "127.0.0.1", port: smtp.port });
  await relay.cut();
  keygate = await startTestKeygate({
    KEYGATE_SMTP_URL: `smtp://127.0.0.1:${relay.port}`,
    KEYGATE_PUBLIC_URL: publicUrl,
  });
});
afterAll(async () => {
  await keygate?.stop();
  await relay?.stop();
  await smtp?.stop();
});

const outboxRow = z.object({
  template: z.string(),
  recipient: z.string(),
  subject: z.string(),
  body_text: z.string().nullable(),
  body_html: z.string().nullable(),
  body_sealed: z.instanceof(Buffer).nullable(),
  last_error: z.string().nullable(),
  sent_at: z.number().nullable(),
});

const rowsTo = (recipients: string[]) =>
  keygate.database.pool.any(sql.type(outboxRow)`
    SELECT template, recipient, subject, body_text, body_html, body_sealed, last_error, sent_at
    FROM mail_outbox WHERE recipient = ANY(${sql.array(recipients, "text")}) ORDER BY id`);

/** Every byte a reader of the row sees, whatever the column. */
const rowBytes = (row: z.infer<typeof outboxRow>) =>
  Buffer.concat([
    Buffer.from(
      [row.recipient, row.subject, row.body_text, row.body_html, row.last_error].join("\n"),
    ),
    row.body_sealed ?? Buffer.alloc(0),
  ]);

/** The code or link token a body carries. */
function secretIn(text: string): string | undefined {
  return /[?&]token=([A-Za-z0-9_-]+)/.exec(text)?.[1] ?? /^ {4}(\d{6})\r?$/m.exec(text)?.[1];
}

describe(`SECURITY.md 37: outbox bodies at rest (${usingExternalPostgres ? "PostgreSQL" : "embedded PGlite"})`, () => {
  it("with SMTP down the table holds no usable code or link, and after delivery no body at all", {
    timeout: 90_000,
  }, async () => {
    const transport = createConnectTransport({ baseUrl: keygate.url, httpVersion: "2" });
    const auth = createClient(AuthService, transport);
    const admin = createClient(AdminService, transport);
    const asRoot = { headers: { authorization: `Bearer ${keygate.bootstrapped?.adminKey}` } };
    const workspaceId = keygate.bootstrapped?.workspaceId as string;
    const stamp = Date.now();
    const invitee = `at-rest-invitee-${stamp}@example.test`;
    const member = `at-rest-member-${stamp}@example.test`;
    const joiner = `at-rest-joiner-${stamp}@example.test`;
    const password = "correct horse battery staple";

    await admin.addMember({ workspaceId, email: invitee, role: Role.MEMBER }, asRoot);
    await admin.provisionUser(
      { email: member, password, emailVerified: true, workspaceId, role: Role.MEMBER },
      asRoot,
    );
    await auth.requestPasswordReset({ email: member, workspaceId });
    await auth.requestMagicLink({ email: member, workspaceId });
    await auth.signUp({ email: joiner, password }, { headers: { "x-workspace-id": workspaceId } });

    const pending = await rowsTo([invitee, member, joiner]);
    expect(pending.map((r) => r.template).sort()).toEqual(
      ["invitation", "magic_link", "password_reset_link", "verify_email_code"].sort(),
    );
    const bodyKey = new MailBodyKey((await loadSecrets(keygate.config)).keyEncryptionKey);
    for (const row of pending) {
      expect(row.sent_at, row.template).toBeNull();
      expect(row.body_text, row.template).toBeNull();
      expect(row.body_html, row.template).toBeNull();
      // The secret is in the sealed body, which the key-encryption key opens...
      const secret = secretIn(bodyKey.open(row, row.body_sealed as Buffer).text);
      expect(secret, row.template).toMatch(/^(\d{6}|[A-Za-z0-9_-]{40,})$/);
      // ...and in no byte a reader of the table sees, in any encoding they might try.
      const bytes = rowBytes(row);
      for (const form of [secret as string, Buffer.from(secret as string).toString("base64")]) {
        expect(bytes.includes(form), `${row.template} ${form}`).toBe(false);
      }
      expect(secretIn(bytes.toString("latin1")), row.template).toBeUndefined();
    }

    // SMTP comes back: every message is delivered, with a working link, and its body erased.
    await relay.restore();
    const invitation = await smtp.waitFor((m) => m.to.includes(invitee), 60_000);
    for (const to of [member, joiner]) await smtp.waitFor((m) => m.to.includes(to), 60_000);
    const accepted = await auth.acceptInvitation({
      token: linkIn(invitation).token,
      password: "my own good passphrase",
    });
    expect(accepted.tokens?.workspaceId).toBe(workspaceId);
    await expect
      .poll(
        async () => (await rowsTo([invitee, member, joiner])).every((r) => r.sent_at !== null),
        {
          timeout: 30_000,
        },
      )
      .toBe(true);
    for (const row of await rowsTo([invitee, member, joiner])) {
      expect([row.body_text, row.body_html, row.body_sealed], row.template).toEqual([
        null,
        null,
        null,
      ]);
    }
  });
});
