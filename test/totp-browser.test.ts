import { existsSync } from "node:fs";
import { Secret, TOTP } from "otpauth";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeygateClient } from "../src/client/index.js";
import { ManualClock } from "../src/clock.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { buildWebApp } from "./support/web-app.js";

// The authenticator app in the web app at /ui/, in headless Chromium: set one up from the
// QR page's key, keep the recovery codes, sign in with the app and with a recovery code, and
// remove it again confirmed with the app. The server runs on a manual clock so that each code
// is used in a step of its own (a code works once).
const executablePath = "/usr/bin/chromium";
const hasChromium = existsSync(executablePath);
const waitLong = { timeout: 60_000 };
const clock = new ManualClock(Math.floor(Date.now() / 30_000) * 30_000 + 10_000);
const email = `totp-browser-${Date.now()}@example.test`;
const password = "correct horse battery staple";

let keygate: TestKeygate;
let browser: Browser;
let page: Page;
const problems: string[] = [];

const codeFor = (secret: string) => {
  clock.advance(30_000);
  return new TOTP({ secret: Secret.fromBase32(secret) }).generate({
    timestamp: clock.now().getTime(),
  });
};
const status = () => page.getByRole("status").first().textContent();
const signedIn = () => page.getByRole("heading", { name: `Hello, ${email}` }).waitFor(waitLong);

async function signInWithPassword() {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Workspace").fill("default");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

async function logOut() {
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
}

describe.skipIf(!hasChromium)(
  `the authenticator app in the web app${hasChromium ? "" : " (skipped: /usr/bin/chromium is absent)"}`,
  () => {
    let secret = "";
    let recoveryCodes: string[] = [];

    beforeAll(async () => {
      keygate = await startTestKeygate(
        {
          KEYGATE_UI: "true",
          KEYGATE_WORKSPACE_DEFAULTS: JSON.stringify({ email_verification: "off" }),
        },
        { webAppDir: await buildWebApp(), clock },
      );
      const client = createKeygateClient({
        baseUrl: keygate.url,
        transport: "connect",
        workspaceId: keygate.bootstrapped?.workspaceId as string,
      });
      await client.auth.signUp({ email, password });
      browser = await chromium.launch({
        executablePath,
        headless: true,
        args: ["--no-sandbox", "--disable-background-networking"],
      });
      page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
      page.setDefaultTimeout(60_000);
      page.on("pageerror", (e) => problems.push(e.message));
    }, 180_000);
    afterAll(async () => {
      await browser?.close();
      await keygate?.stop();
    });

    it("sets up an app from the QR page and shows the recovery codes once", {
      timeout: 120_000,
    }, async () => {
      await page.goto(`${keygate.url}/ui/`);
      await signInWithPassword();
      await signedIn();
      await page.getByRole("heading", { name: "Authenticator app" }).waitFor();
      await page.getByRole("button", { name: "Set up an authenticator app" }).click();
      await page.getByRole("img", { name: "QR code for your authenticator app" }).waitFor();
      secret = (await page.getByTestId("totp-secret").textContent()) ?? "";
      expect(secret).toMatch(/^[A-Z2-7]{32}$/);
      await page.getByLabel("Code from your authenticator app").fill(codeFor(secret));
      await page.getByRole("button", { name: "Confirm" }).click();
      await expect.poll(status, waitLong).toBe("Your authenticator app is set up.");
      recoveryCodes = await page
        .getByRole("list", { name: "Recovery codes" })
        .getByRole("listitem")
        .allTextContents();
      expect(recoveryCodes).toHaveLength(10);
      await page.getByText(/recovery codes left/).waitFor();
      expect(await page.getByText(secret).count()).toBe(0);
      expect(problems).toEqual([]);
    });

    it("asks for the app after the password, and takes a recovery code instead", {
      timeout: 120_000,
    }, async () => {
      await logOut();
      await signInWithPassword();
      await page.getByRole("heading", { name: "Confirm it is you" }).waitFor();
      await page.getByLabel("Code from your authenticator app").fill(codeFor(secret));
      await page.getByRole("button", { name: "Continue" }).click();
      await signedIn();

      await logOut();
      await signInWithPassword();
      await page.getByRole("button", { name: "Use a recovery code" }).click();
      await page.getByLabel("Recovery code").fill(recoveryCodes[0] as string);
      await page.getByRole("button", { name: "Continue" }).click();
      await signedIn();
      await page.getByText("9 recovery codes left", { exact: false }).waitFor();

      // The same recovery code does not work twice.
      await logOut();
      await signInWithPassword();
      await page.getByRole("button", { name: "Use a recovery code" }).click();
      await page.getByLabel("Recovery code").fill(recoveryCodes[0] as string);
      await page.getByRole("button", { name: "Continue" }).click();
      await expect.poll(() => page.getByRole("alert").first().textContent(), waitLong).not.toBe("");
      await page.getByLabel("Recovery code").fill(recoveryCodes[1] as string);
      await page.getByRole("button", { name: "Continue" }).click();
      await signedIn();
    });

    it("removes the app, confirmed with a code from it", { timeout: 120_000 }, async () => {
      await page.getByRole("button", { name: "Remove the authenticator app" }).click();
      await page.getByLabel("Code from your authenticator app").fill(codeFor(secret));
      await page.getByRole("button", { name: "Remove the app" }).click();
      await expect.poll(status, waitLong).toBe("The authenticator app was removed.");
      await page.getByText("No authenticator app yet.").waitFor();
      await logOut();
      await signInWithPassword();
      await signedIn();
      expect(problems).toEqual([]);
    });
  },
);
