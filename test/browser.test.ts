import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createKeygateClient,
  errorReason,
  type KeygateClient,
  OtpLoginMode,
  Role,
} from "../src/client/index.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { codeIn, linkIn, type ReceivedMail, startSmtpServer } from "./support/smtp.js";
import { buildWebApp } from "./support/web-app.js";

// The whole journey of a person through the web app at /ui/, in Debian's headless Chromium,
// against a real server, with codes and links read from a real SMTP server. Screenshots land in
// test-artifacts/browser/. .ci/run installs Chromium; without it this suite is skipped.
const executablePath = "/usr/bin/chromium";
const hasChromium = existsSync(executablePath);
const artifacts = path.resolve(import.meta.dirname, "../test-artifacts/browser");

let keygate: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let browser: Browser;
let page: Page;
let admin: KeygateClient;
const problems: string[] = [];
const email = `browser-${Date.now()}@example.test`;
let password = "correct horse battery staple";
let shot = 0;
/** How long a poll may wait for the page: a bound for a hung run, not a timing assertion. */
const waitLong = { timeout: 60_000 };

async function screenshot(name: string) {
  await page.screenshot({
    path: path.join(artifacts, `${String(++shot).padStart(2, "0")}-${name}.png`),
    fullPage: true,
  });
}

/** The next mail to the address after the ones already seen. */
async function nextMail(address: string, seen: number): Promise<ReceivedMail> {
  return smtp.waitFor(
    (m) =>
      m.to.includes(address) &&
      smtp.received.filter((r) => r.to.includes(address)).indexOf(m) >= seen,
  );
}
const mailCount = (address: string) => smtp.received.filter((m) => m.to.includes(address)).length;

async function signInForm(workspace: string, pw = password) {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(pw);
  await page.getByLabel("Workspace").fill(workspace);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

async function logOut() {
  await page.getByRole("button", { name: "Log out" }).click();
  await expect
    .poll(() => page.getByRole("status").first().textContent(), waitLong)
    .toContain("signed out");
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
}

describe.skipIf(!hasChromium)(
  `web app in headless Chromium${hasChromium ? "" : " (skipped: /usr/bin/chromium is absent)"}`,
  () => {
    beforeAll(async () => {
      await mkdir(artifacts, { recursive: true });
      smtp = await startSmtpServer();
      keygate = await startTestKeygate(
        { KEYGATE_SMTP_URL: smtp.url, KEYGATE_UI: "true" },
        { webAppDir: await buildWebApp() },
      );
      admin = createKeygateClient({
        baseUrl: keygate.url,
        transport: "connect",
        adminKey: keygate.bootstrapped?.adminKey as string,
      });
      browser = await chromium.launch({
        executablePath,
        headless: true,
        args: ["--no-sandbox", "--disable-background-networking"],
      });
      page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      // Generous bounds for a loaded machine; they only stop a hung run.
      page.setDefaultTimeout(60_000);
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(m.text());
      });
      page.on("pageerror", (e) => problems.push(e.message));
    }, 180_000);
    afterAll(async () => {
      await browser?.close();
      await keygate?.stop();
      await smtp?.stop();
    });

    it("signs up, verifies the email with the code and signs in by keyboard", {
      timeout: 120_000,
    }, async () => {
      await page.goto(`${keygate.url}/ui/`);
      await page.getByRole("heading", { name: "Sign in" }).waitFor();
      await screenshot("sign-in");

      await page.getByRole("button", { name: "Create an account" }).click();
      await page.getByRole("heading", { name: "Create an account" }).waitFor();
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("New password").fill(password);
      const seen = mailCount(email);
      await page.getByRole("button", { name: "Create account" }).click();
      await page.getByRole("heading", { name: "Verify your email" }).waitFor();
      await screenshot("verify-email");

      // A wrong code: the error shows and nothing on the form moves.
      const button = page.getByRole("button", { name: "Verify email" });
      const before = await button.boundingBox();
      await page.getByLabel("Code").fill("000000");
      await button.click();
      await expect
        .poll(() => page.getByRole("alert").textContent(), waitLong)
        .toMatch(/wrong, used or expired/);
      expect(await page.getByLabel("Code").getAttribute("aria-invalid")).toBe("true");
      expect((await button.boundingBox())?.y).toBe(before?.y);
      await screenshot("verify-email-wrong-code");

      await page.getByLabel("Code").fill(codeIn(await nextMail(email, seen)));
      await button.click();
      await page.getByText("Your email address is verified").waitFor();

      // By keyboard only: the email field has focus; Tab moves on, Enter submits.
      expect(await page.evaluate(() => document.activeElement?.getAttribute("name"))).toBe("email");
      await page.keyboard.press("Control+A");
      await page.keyboard.type(email);
      await page.keyboard.press("Tab");
      await page.keyboard.type(password);
      await page.keyboard.press("Enter");
      await page.getByRole("heading", { name: `Hello, ${email}` }).waitFor();
      expect(await page.getByTestId("workspace-name").textContent()).toBe("Default");
      expect(await page.getByText("Verified", { exact: true }).count()).toBe(1);
      await screenshot("home");
    });

    it("lists sessions and revokes another one, which then cannot refresh", {
      timeout: 120_000,
    }, async () => {
      const other = createKeygateClient({
        baseUrl: keygate.url,
        transport: "grpc",
        workspaceId: keygate.bootstrapped?.workspaceId as string,
      });
      await other.auth.login({ email, password });
      const otherTokens = await other.tokens.get();
      await page.reload();
      const revoke = page.getByRole("button", { name: /^Revoke session/ });
      await revoke.waitFor();
      expect(
        await page.getByRole("list", { name: "Active sessions" }).getByRole("listitem").count(),
      ).toBe(2);
      await screenshot("sessions");
      await revoke.click();
      await expect
        .poll(
          () => page.getByRole("list", { name: "Active sessions" }).getByRole("listitem").count(),
          waitLong,
        )
        .toBe(1);
      expect(await page.getByText("This device").count()).toBe(1);
      const error = await other.auth
        .refresh({ refreshToken: otherTokens?.refreshToken as string })
        .catch((e: unknown) => e);
      expect(errorReason(error)).toBe("REFRESH_TOKEN_INVALID");
    });

    it("switches to another workspace, then signs in there with the emailed second step", {
      timeout: 120_000,
    }, async () => {
      const user = await admin.admin.listUsers({ emailPrefix: email });
      const userId = user.users[0]?.id as string;
      const slug = `acme-${Date.now()}`;
      const { workspace } = await admin.admin.createWorkspace({ name: "Acme Corp", slug });
      const workspaceId = workspace?.id as string;
      // Vouched for by the deployment, the account joins as it is (SECURITY.md 28).
      await admin.admin.markEmailVerified({ userId });
      await admin.admin.addMember({ workspaceId, userId, role: Role.ADMIN });
      await page.reload();
      await page.getByRole("button", { name: "Switch to Acme Corp" }).click();
      await expect
        .poll(() => page.getByTestId("workspace-name").textContent(), waitLong)
        .toBe("Acme Corp");
      expect(await page.getByText("Admin", { exact: true }).count()).toBeGreaterThan(0);
      await screenshot("switched-workspace");
      await logOut();

      await admin.admin.updateWorkspaceSettings({
        workspaceId,
        settings: { otpLogin: OtpLoginMode.REQUIRED },
      });
      const seen = mailCount(email);
      await signInForm(slug);
      await page.getByRole("heading", { name: "Check your email" }).waitFor();
      await screenshot("second-step");
      await page.getByLabel("Code").fill(codeIn(await nextMail(email, seen)));
      await page.getByRole("button", { name: "Continue" }).click();
      await expect
        .poll(() => page.getByTestId("workspace-name").textContent(), waitLong)
        .toBe("Acme Corp");
      await logOut();
    });

    it("shows a wrong password, then signs in with an emailed magic link only after a click", {
      timeout: 120_000,
    }, async () => {
      await signInForm("default", "not the password at all");
      await expect
        .poll(() => page.getByRole("alert").textContent(), waitLong)
        .toMatch(/do not match/);
      await screenshot("wrong-password");

      await page.getByRole("button", { name: "Email me a sign-in link" }).click();
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Workspace").fill("default");
      const seen = mailCount(email);
      await page.getByRole("button", { name: "Email me a link" }).click();
      await expect
        .poll(() => page.getByRole("alert").textContent(), waitLong)
        .toMatch(/on its way/);
      await screenshot("magic-link-sent");
      const link = new URL(linkIn(await nextMail(email, seen)).url);
      expect(link.pathname).toBe("/ui/magic-link");
      const used = async () =>
        (await admin.admin.listAuditEvents({ types: ["magic_link_used"] })).events.length;
      const usedBefore = await used();
      await page.goto(`${keygate.url}${link.pathname}${link.search}`);
      // Opening the link signs nobody in: it waits for a click (login CSRF).
      const confirm = page.getByRole("button", { name: "Continue" });
      await confirm.waitFor();
      await screenshot("magic-link-confirm");
      // The token does not stay in the address bar or history.
      expect(new URL(page.url()).search).toBe("");
      expect(await page.getByRole("heading", { name: `Hello, ${email}` }).count()).toBe(0);
      expect(await used()).toBe(usedBefore);
      await confirm.click();
      await page.getByRole("heading", { name: `Hello, ${email}` }).waitFor();
      expect(await used()).toBe(usedBefore + 1);
      await logOut();
    });

    it("resets the password from the emailed link and signs in with the new one", {
      timeout: 120_000,
    }, async () => {
      await page.getByRole("button", { name: "Forgot password?" }).click();
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Workspace").fill("default");
      const seen = mailCount(email);
      await page.getByRole("button", { name: "Send reset instructions" }).click();
      await page.getByRole("heading", { name: "Choose a new password" }).waitFor();
      const link = new URL(linkIn(await nextMail(email, seen)).url);
      expect(link.pathname).toBe("/ui/reset-password");
      await page.goto(`${keygate.url}${link.pathname}${link.search}`);
      password = "a brand new passphrase for keygate";
      await page.getByLabel("New password").fill(password);
      await screenshot("reset-password");
      await page.getByRole("button", { name: "Set new password" }).click();
      await page.getByText("Your password was changed").waitFor();
      await signInForm("default");
      await page.getByRole("heading", { name: `Hello, ${email}` }).waitFor();
      await screenshot("signed-in-after-reset");
      await logOut();
      await screenshot("signed-out");
    });

    it("accepts an invitation from the emailed link and lands signed in", {
      timeout: 120_000,
    }, async () => {
      const invited = `invited-${Date.now()}@example.test`;
      const workspaceId = keygate.bootstrapped?.workspaceId as string;
      await admin.admin.addMember({ workspaceId, email: invited });
      const link = new URL(linkIn(await nextMail(invited, 0)).url);
      expect(link.pathname).toBe("/ui/accept-invitation");
      await page.goto(`${keygate.url}${link.pathname}${link.search}`);
      await page.getByRole("heading", { name: "Accept your invitation" }).waitFor();
      await page.getByLabel("New password").fill("an invitation well accepted");
      await page.getByRole("button", { name: "Accept and sign in" }).click();
      await page.getByRole("heading", { name: `Hello, ${invited}` }).waitFor();
      expect(await page.getByTestId("workspace-name").textContent()).toBe("Default");
      await screenshot("invitation-accepted");
      await logOut();
    });

    it("ran without a script error or a Content-Security-Policy violation", () => {
      expect(problems.filter((p) => !/status of 40[0-9]/.test(p))).toEqual([]);
    });
  },
);
