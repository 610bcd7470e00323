import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import * as client from "openid-client";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeygateClient, type KeygateClient } from "../src/client/index.js";
import { freePort, uniqueEmail } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { buildWebApp } from "./support/web-app.js";

// "Sign in with Keygate" as a person sees it: an unmodified openid-client relying party sends
// headless Chromium to the workspace's provider, the person signs in on the hosted page at
// /ui/ (and, for a third-party client, allows it), and the browser lands on the relying
// party's callback with a code that openid-client exchanges and validates.
const executablePath = "/usr/bin/chromium";
const hasChromium = existsSync(executablePath);

let keygate: TestKeygate;
let admin: KeygateClient;
let browser: Browser;
let rp: http.Server;
let callbackBase: string;
const password = "correct horse battery staple";
const waitLong = { timeout: 60_000 };

async function registered(name: string, firstParty: boolean) {
  const res = await admin.admin.createOAuthClient({
    workspaceId: keygate.bootstrapped?.workspaceId as string,
    name,
    redirectUris: [`${callbackBase}/callback`],
    confidential: true,
    firstParty,
  });
  return client.discovery(
    new URL(res.client?.issuer as string),
    res.client?.clientId as string,
    undefined,
    client.ClientSecretBasic(res.clientSecret),
    { execute: [client.allowInsecureRequests] },
  );
}

async function start(config: client.Configuration, extra: Record<string, string> = {}) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: `${callbackBase}/callback`,
    scope: "openid email",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    nonce,
    ...extra,
  });
  return { url, verifier, state, nonce };
}

/** Waits until the browser is at the relying party's callback, and exchanges the code there. */
async function landed(
  page: Page,
  config: client.Configuration,
  started: Awaited<ReturnType<typeof start>>,
) {
  await page.waitForURL((url) => url.toString().startsWith(`${callbackBase}/callback`), waitLong);
  await expect.poll(() => page.textContent("body"), waitLong).toContain("back at the app");
  return client.authorizationCodeGrant(config, new URL(page.url()), {
    pkceCodeVerifier: started.verifier,
    expectedState: started.state,
    expectedNonce: started.nonce,
    idTokenExpected: true,
  });
}

/** Starts another sign-in at a client the browser is signed in to and allowed already. */
async function goAgain(page: Page, config: client.Configuration) {
  const started = await start(config);
  await page.goto(started.url.toString());
  return started;
}

describe.skipIf(!hasChromium)(
  `signing in to an application in headless Chromium${hasChromium ? "" : " (skipped: /usr/bin/chromium is absent)"}`,
  () => {
    beforeAll(async () => {
      const port = await freePort();
      keygate = await startTestKeygate(
        {
          KEYGATE_UI: "true",
          KEYGATE_PORT: String(port),
          KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
        },
        { webAppDir: await buildWebApp() },
      );
      admin = createKeygateClient({
        baseUrl: keygate.url,
        transport: "connect",
        adminKey: keygate.bootstrapped?.adminKey as string,
      });
      // The relying party's own web server: it only has to show that the browser came back.
      rp = http.createServer((_req, res) => {
        res.setHeader("content-type", "text/html; charset=utf-8");
        res.end("<!doctype html><title>RP</title><p>back at the app</p>");
      });
      await new Promise<void>((resolve) => rp.listen(0, "127.0.0.1", resolve));
      callbackBase = `http://127.0.0.1:${(rp.address() as AddressInfo).port}`;
      browser = await chromium.launch({
        executablePath,
        headless: true,
        args: ["--no-sandbox", "--disable-background-networking"],
      });
    }, 180_000);
    afterAll(async () => {
      await browser?.close();
      await new Promise((resolve) => rp?.close(resolve));
      await keygate?.stop();
    });

    it("signs in on the hosted page, comes back with a code, and the next time goes straight through", async () => {
      const email = uniqueEmail("rp-browser");
      await admin.admin.provisionUser({
        email,
        password,
        workspaceId: keygate.bootstrapped?.workspaceId as string,
        emailVerified: true,
      });
      const config = await registered("Example app", true);
      const context = await browser.newContext();
      const page = await context.newPage();
      page.setDefaultTimeout(60_000);
      const first = await start(config);
      await page.goto(first.url.toString());
      await expect
        .poll(() => page.getByRole("status").first().textContent(), waitLong)
        .toContain("Sign in to continue to Example app");
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Password", { exact: true }).fill(password);
      expect(await page.getByLabel("Workspace").inputValue()).toBe("default");
      await page.getByRole("button", { name: "Sign in", exact: true }).click();
      const tokens = await landed(page, config, first);
      const claims = tokens.claims();
      expect(claims?.email).toBe(email);
      expect(claims?.iss).toBe(`${keygate.config.issuer}/w/${keygate.bootstrapped?.workspaceId}`);
      const info = await client.fetchUserInfo(config, tokens.access_token, claims?.sub as string);
      expect(info.email).toBe(email);

      // Single sign-on: the provider knows this browser now.
      const second = await start(config);
      await page.goto(second.url.toString());
      expect((await landed(page, config, second)).claims()?.sub).toBe(claims?.sub);

      // A third-party client asks first; allowing it goes back to it.
      const third = await registered("Third app", false);
      const asked = await start(third);
      await page.goto(asked.url.toString());
      await page.getByRole("heading", { name: "Allow Third app?" }).waitFor();
      expect(await page.textContent("body")).toContain("Your email address");
      await page.getByRole("button", { name: "Allow" }).click();
      expect((await landed(page, third, asked)).claims()?.sub).toBe(claims?.sub);
      // Allowed once, it is not asked again for as much.
      const remembered = await start(third);
      await page.goto(remembered.url.toString());
      expect((await landed(page, third, remembered)).claims()?.sub).toBe(claims?.sub);

      // Denying (asked again with prompt=consent) sends access_denied.
      const denied = await start(third, { prompt: "consent" });
      await page.goto(denied.url.toString());
      await page.getByRole("button", { name: "Deny" }).click();
      await page.waitForURL(
        (url) => url.toString().startsWith(`${callbackBase}/callback`),
        waitLong,
      );
      expect(new URL(page.url()).searchParams.get("error")).toBe("access_denied");

      // Both apps are under "Connected apps" on the person's page, not among the devices.
      await page.goto(`${keygate.url}/ui/`);
      const apps = page.getByRole("list", { name: "Connected apps" });
      await expect.poll(() => apps.textContent(), waitLong).toContain("Third app");
      expect(await apps.textContent()).toContain("Example app");
      expect(await apps.textContent()).toContain("your email address");
      const devices = await page.getByRole("list", { name: "Active sessions" }).textContent();
      expect(devices).not.toContain("Third app");
      expect(await page.getByRole("button", { name: /^Revoke session/ }).count()).toBe(0);
      // Removing one app's access ends its tokens and forgets the consent; the other stays.
      const thirdRefresh = (await landed(page, third, await goAgain(page, third))).refresh_token;
      await page.goto(`${keygate.url}/ui/`);
      await page.getByRole("button", { name: "Remove access: Third app" }).click();
      await expect
        .poll(() => page.getByRole("status").first().textContent(), waitLong)
        .toContain("Third app no longer has access");
      expect(await apps.textContent()).not.toContain("Third app");
      expect(await apps.textContent()).toContain("Example app");
      const refused = await client
        .refreshTokenGrant(third, thirdRefresh as string)
        .catch((e: unknown) => e);
      expect((refused as client.ResponseBodyError).error).toBe("invalid_grant");
      const again = await start(third);
      await page.goto(again.url.toString());
      await page.getByRole("heading", { name: "Allow Third app?" }).waitFor();
      await context.close();
    });
  },
);
