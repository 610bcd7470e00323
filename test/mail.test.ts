import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configFromEnv } from "../src/config.js";
import { createLogger } from "../src/log.js";
import { createMailer } from "../src/mail/mailer.js";
import { startSmtpServer } from "./support/smtp.js";

describe("SMTP mailer", () => {
  let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
  beforeAll(async () => {
    smtp = await startSmtpServer();
  });
  afterAll(async () => {
    await smtp?.stop();
  });

  it("delivers through the configured SMTP server", async () => {
    const config = configFromEnv({
      KEYGATE_SMTP_URL: smtp.url,
      KEYGATE_MAIL_FROM: "Keygate <auth@example.test>",
    });
    const mailer = createMailer(config, createLogger("silent"));
    await mailer.send({
      to: "ada@example.test",
      subject: "Your code",
      text: "Your code is 123456",
    });
    mailer.close();
    const mail = await smtp.waitFor((m) => m.to.includes("ada@example.test"));
    expect(mail.from).toBe("auth@example.test");
    expect(mail.raw).toContain("Subject: Your code");
    expect(mail.raw).toContain("Your code is 123456");
  });

  it("reports a refused delivery as an error, so the caller can retry", async () => {
    const config = configFromEnv({ KEYGATE_SMTP_HOST: "127.0.0.1", KEYGATE_SMTP_PORT: "1" });
    const mailer = createMailer(config, createLogger("silent"));
    await expect(
      mailer.send({ to: "ada@example.test", subject: "x", text: "x" }),
    ).rejects.toThrow();
    mailer.close();
  });
});

describe("dev outbox mailer (no SMTP configured)", () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "keygate-outbox-"));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it("prints the message and writes it as an .eml file under the data directory", async () => {
    const config = configFromEnv({ KEYGATE_DATA_DIR: dataDir });
    const printed: string[] = [];
    const { devOutboxMailer } = await import("../src/mail/mailer.js");
    const mailer = devOutboxMailer(config, createLogger("silent"), (t) => printed.push(t));
    await mailer.send({
      to: "ada@example.test",
      subject: "Sign in",
      text: "Open http://127.0.0.1:8080/x?token=abc",
    });
    const files = await readdir(path.join(dataDir, "outbox"));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/\.eml$/);
    const eml = await readFile(path.join(dataDir, "outbox", files[0] as string), "utf8");
    expect(eml).toContain("To: ada@example.test");
    expect(eml).toContain("Subject: Sign in");
    expect(printed.join("")).toContain("To: ada@example.test");
    expect(printed.join("")).toContain("token=abc");
    // Without SMTP settings the factory picks the dev outbox.
    expect(config.smtp).toBeUndefined();
  });
});
