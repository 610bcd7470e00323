import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { type Browser, type CDPSession, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeygateClient, type KeygateClient } from "../src/client/index.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { buildWebApp } from "./support/web-app.js";

// Passkeys in the web app at /ui/, in headless Chromium with its virtual authenticators
// (CDP WebAuthn domain): add one, sign in username-less with the button and through the
// email field's autofill, a second authenticator, deletion. WebAuthn refuses IP addresses as
// RP IDs, so the page is opened as http://localhost:<port>, the port chosen before the start
// so that the configured origin can name it.
const executablePath = "/usr/bin/chromium";
const hasChromium = existsSync(executablePath);
const artifacts = path.resolve(import.meta.dirname, "../test-artifacts/browser-passkeys");
const waitLong = { timeout: 60_000 };

let keygate: TestKeygate;
let browser: Browser;
let page: Page;
let cdp: CDPSession;
let client: KeygateClient;
let base: string;
const problems: string[] = [];
const email = `passkey-browser-${Date.now()}@example.test`;
const password = "correct horse battery staple";
let shot = 0;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function screenshot(name: string) {
  await page.screenshot({
    path: path.join(artifacts, `${String(++shot).padStart(2, "0")}-${name}.png`),
    fullPage: true,
  });
}

type Device = "phone" | "key";
type Credential = Awaited<
  ReturnType<typeof cdp.send<"WebAuthn.getCredentials">>
>["credentials"][number];
const saved = new Map<Device, Credential[]>();
let active: { device: Device; id: string } | undefined;

/**
 * Makes `device` the tab's authenticator: a platform one (the phone) or a security key over
 * USB, each keeping its credentials (keys and counters) while the other is in use. Chrome
 * allows one internal authenticator per tab and sends a request to every authenticator
 * present, so one at a time keeps it clear which one answered.
 */
async function use(device: Device): Promise<string> {
  if (active?.device === device) return active.id;
  if (active) {
    saved.set(active.device, await credentialsOf());
    await cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId: active.id });
  }
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: device === "phone" ? "internal" : "usb",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  for (const credential of saved.get(device) ?? [])
    await cdp.send("WebAuthn.addCredential", { authenticatorId, credential });
  active = { device, id: authenticatorId };
  return authenticatorId;
}

async function credentialsOf(): Promise<Credential[]> {
  if (!active) return [];
  return (await cdp.send("WebAuthn.getCredentials", { authenticatorId: active.id })).credentials;
}
const signCount = async () => (await credentialsOf())[0]?.signCount ?? 0;

async function status() {
  return page.getByRole("status").first().textContent();
}

async function logOut() {
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
}

const signedIn = () => page.getByRole("heading", { name: `Hello, ${email}` }).waitFor(waitLong);

describe.skipIf(!hasChromium)(
  `passkeys in the web app${hasChromium ? "" : " (skipped: /usr/bin/chromium is absent)"}`,
  () => {
    beforeAll(async () => {
      await mkdir(artifacts, { recursive: true });
      const port = await freePort();
      base = `http://localhost:${port}`;
      keygate = await startTestKeygate(
        {
          KEYGATE_UI: "true",
          KEYGATE_PORT: String(port),
          KEYGATE_PUBLIC_URL: `${base}/ui`,
          KEYGATE_WORKSPACE_DEFAULTS: JSON.stringify({ email_verification: "off" }),
        },
        { webAppDir: await buildWebApp() },
      );
      expect(keygate.config.webauthn).toEqual({ rpId: "localhost", origins: [base] });
      client = createKeygateClient({
        baseUrl: keygate.url,
        transport: "connect",
        workspaceId: keygate.bootstrapped?.workspaceId as string,
      });
      await client.auth.signUp({ email, password });
      browser = await chromium.launch({
        executablePath,
        headless: true,
        args: [
          "--no-sandbox",
          "--disable-background-networking",
          "--host-resolver-rules=MAP localhost 127.0.0.1",
        ],
      });
      page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
      page.setDefaultTimeout(60_000);
      page.on("pageerror", (e) => problems.push(e.message));
      cdp = await page.context().newCDPSession(page);
      await cdp.send("WebAuthn.enable", { enableUI: false });
    }, 180_000);
    afterAll(async () => {
      await browser?.close();
      await keygate?.stop();
    });

    const rows = () => page.getByRole("list", { name: "Your passkeys" }).getByRole("listitem");

    it("adds a passkey on the signed-in page", { timeout: 120_000 }, async () => {
      await use("phone");
      const login = await client.auth.login({ email, password });
      const userId = login.result.case === "tokens" ? login.result.value.userId : "";
      expect(userId).not.toBe("");
      await page.goto(`${base}/ui/`);
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Password", { exact: true }).fill(password);
      await page.getByLabel("Workspace").fill("default");
      await page.getByRole("button", { name: "Sign in", exact: true }).click();
      await signedIn();
      await page.getByRole("heading", { name: "Passkeys" }).waitFor();
      await page.getByText("No passkeys yet.").waitFor();
      await page.getByRole("button", { name: "Add a passkey" }).click();
      await expect.poll(status, waitLong).toMatch(/^Added /);
      await expect.poll(() => rows().count(), waitLong).toBe(1);
      await screenshot("passkey-added");
      const stored = await credentialsOf();
      expect(stored).toHaveLength(1);
      expect(stored[0]?.isResidentCredential).toBe(true);
      expect(stored[0]?.rpId).toBe("localhost");
      // The user handle is the membership's random one, not the account id.
      const handle = Buffer.from(stored[0]?.userHandle ?? "", "base64");
      expect(handle.length).toBe(32);
      expect(handle.toString("hex")).not.toContain(userId.replaceAll("-", ""));
      // Renamed in place.
      await page.getByRole("button", { name: /^Rename passkey/ }).click();
      await page.getByRole("textbox", { name: /^New name for/ }).fill("Work laptop");
      await page.getByRole("button", { name: "Save" }).click();
      await expect.poll(status, waitLong).toBe("Renamed to Work laptop.");
      await expect.poll(() => rows().first().textContent(), waitLong).toContain("Work laptop");
    });

    it("signs in through the email field's autofill", { timeout: 120_000 }, async () => {
      const before = await signCount();
      // The conditional request starts with the sign-in page; the virtual authenticator
      // answers it at once, as a person picking the passkey from the email field's
      // suggestions would. Nothing is clicked or typed.
      await page.getByRole("button", { name: "Log out" }).click();
      await expect.poll(status, waitLong).toBe("You are signed in.");
      await signedIn();
      expect(await signCount()).toBeGreaterThan(before);
      await screenshot("signed-in-by-autofill");
    });

    it("signs in username-less with the button, and offers the passkey as a second step", {
      timeout: 120_000,
    }, async () => {
      // A browser without passkey autofill from here on: only the button signs in.
      await page.evaluate(() => {
        (
          PublicKeyCredential as unknown as { isConditionalMediationAvailable: () => unknown }
        ).isConditionalMediationAvailable = async () => false;
      });
      await logOut();
      expect(await page.getByLabel("Email").getAttribute("autocomplete")).toBe("username webauthn");
      const before = await signCount();
      await page.getByRole("button", { name: "Sign in with a passkey" }).click();
      await signedIn();
      expect(await signCount()).toBeGreaterThan(before);

      // With a passkey in this workspace, the password alone asks for it next.
      await logOut();
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Password", { exact: true }).fill(password);
      await page.getByRole("button", { name: "Sign in", exact: true }).click();
      await page.getByRole("heading", { name: "Confirm it is you" }).waitFor();
      await screenshot("passkey-second-step");
      await page.getByRole("button", { name: "Use a passkey" }).click();
      await signedIn();
    });

    it("adds a second authenticator; both sign in", { timeout: 120_000 }, async () => {
      await use("key");
      await page.getByRole("button", { name: "Add a passkey" }).click();
      await expect.poll(status, waitLong).toMatch(/^Added /);
      await expect.poll(() => rows().count(), waitLong).toBe(2);
      expect(await credentialsOf()).toHaveLength(1);
      await screenshot("two-passkeys");
      for (const device of ["phone", "key"] as const) {
        await use(device);
        await logOut();
        const before = await signCount();
        await page.getByRole("button", { name: "Sign in with a passkey" }).click();
        await signedIn();
        expect({ device, moved: (await signCount()) > before }).toEqual({ device, moved: true });
      }
    });

    it("deletes a passkey, confirmed with a passkey; the deleted one stops at once", {
      timeout: 120_000,
    }, async () => {
      // The phone's passkey is "Work laptop"; the key confirms its deletion.
      await use("key");
      await page.getByRole("button", { name: "Delete passkey Work laptop" }).click();
      await expect.poll(status, waitLong).toBe("Deleted Work laptop. It no longer signs in.");
      await expect.poll(() => rows().count(), waitLong).toBe(1);
      await screenshot("passkey-deleted");

      await use("phone");
      await logOut();
      await page.getByRole("button", { name: "Sign in with a passkey" }).click();
      await expect
        .poll(() => page.getByRole("alert").first().textContent(), waitLong)
        .toBe("That passkey was not accepted.");
      await use("key");
      await page.getByRole("button", { name: "Sign in with a passkey" }).click();
      await signedIn();
      expect(problems).toEqual([]);
    });
  },
);
