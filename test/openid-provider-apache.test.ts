import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeygateClient, type KeygateClient } from "../src/client/index.js";
import { freePort, uniqueEmail } from "./support/fixtures.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { buildWebApp } from "./support/web-app.js";

// A real relying party that is not JavaScript: Apache with Debian's mod_auth_openidc,
// configured with nothing but the workspace's discovery URL and a client. Chromium opens a
// protected path, signs in on Keygate's page, and lands back with the claims; signing out of
// Keygate ends the Apache session through back-channel logout. .ci/run installs both.
const executablePath = "/usr/bin/chromium";
const apache = "/usr/sbin/apache2";
const module = "/usr/lib/apache2/modules/mod_auth_openidc.so";
const available = existsSync(executablePath) && existsSync(apache) && existsSync(module);

let keygate: TestKeygate;
let admin: KeygateClient;
let browser: Browser;
let httpd: ChildProcess | undefined;
let dir: string;
let apacheUrl: string;
const password = "correct horse battery staple";
const waitLong = { timeout: 60_000 };

/** Apache on `port` (apacheUrl), the client's relying party. */
async function startApache(
  port: number,
  config: { discovery: string; clientId: string; secret: string },
) {
  await mkdir(path.join(dir, "htdocs/protected"), { recursive: true });
  await writeFile(
    path.join(dir, "htdocs/protected/index.shtml"),
    '<!doctype html><title>protected</title><p>signed in as <span id="email"><!--#echo var="OIDC_CLAIM_email" --></span></p>\n',
  );
  const asRoot = process.getuid?.() === 0;
  await writeFile(
    path.join(dir, "httpd.conf"),
    [
      `ServerRoot ${dir}`,
      `DefaultRuntimeDir ${dir}`,
      `PidFile ${dir}/httpd.pid`,
      `ErrorLog ${dir}/error.log`,
      "LogLevel warn auth_openidc:info",
      `Listen 127.0.0.1:${port}`,
      "ServerName localhost",
      "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so",
      "LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so",
      "LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so",
      "LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so",
      "LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so",
      "TypesConfig /etc/mime.types",
      "LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so",
      "LoadModule include_module /usr/lib/apache2/modules/mod_include.so",
      `LoadModule auth_openidc_module ${module}`,
      ...(asRoot ? ["User www-data", "Group www-data"] : []),
      `DocumentRoot ${dir}/htdocs`,
      "DirectoryIndex index.shtml",
      "AddType text/html .shtml",
      "AddOutputFilter INCLUDES .shtml",
      `<Directory ${dir}/htdocs>`,
      "  Options +Includes",
      "  Require all granted",
      "</Directory>",
      `OIDCProviderMetadataURL ${config.discovery}`,
      `OIDCClientID ${config.clientId}`,
      `OIDCClientSecret ${config.secret}`,
      `OIDCRedirectURI ${apacheUrl}/protected/redirect_uri`,
      "OIDCCryptoPassphrase a-passphrase-for-the-test-only",
      'OIDCScope "openid email"',
      "OIDCPKCEMethod S256",
      "<Location /protected>",
      "  AuthType openid-connect",
      "  Require valid-user",
      "</Location>",
    ].join("\n"),
  );
  // Apache's worker user reads the documents.
  for (const d of [dir, path.join(dir, "htdocs"), path.join(dir, "htdocs/protected")]) {
    await chmod(d, 0o755);
  }
  const started = spawn(apache, ["-f", path.join(dir, "httpd.conf"), "-DFOREGROUND"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  httpd = started;
  let output = "";
  started.stdout?.on("data", (c: Buffer) => {
    output += c.toString();
  });
  started.stderr?.on("data", (c: Buffer) => {
    output += c.toString();
  });
  for (let i = 0; ; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      return;
    } catch {
      if (started.exitCode !== null || i > 150) {
        const log = await readFile(path.join(dir, "error.log"), "utf8").catch(() => "");
        throw new Error(`Apache did not start: ${output}${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

describe.skipIf(!available)(
  `Apache with mod_auth_openidc${available ? "" : " (skipped: Chromium, Apache or mod_auth_openidc is absent)"}`,
  () => {
    beforeAll(async () => {
      dir = await mkdtemp(path.join(tmpdir(), "keygate-apache-"));
      const port = await freePort();
      keygate = await startTestKeygate(
        {
          KEYGATE_UI: "true",
          KEYGATE_PORT: String(port),
          KEYGATE_ISSUER: `http://127.0.0.1:${port}`,
          KEYGATE_OIDC_LOGOUT_PRIVATE_NETWORKS: "true",
        },
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
    }, 180_000);
    afterAll(async () => {
      await browser?.close();
      httpd?.kill("SIGTERM");
      await keygate?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("signs in through Keygate's page, shows the claims, and a Keygate logout ends the Apache session", async () => {
      const workspaceId = keygate.bootstrapped?.workspaceId as string;
      const email = uniqueEmail("apache");
      await admin.admin.provisionUser({ email, password, workspaceId, emailVerified: true });
      // The redirect and logout URIs are Apache's, so its port is chosen first; localhost, not
      // 127.0.0.1: cookies are per host, so Apache's and Keygate's stay apart.
      const apachePort = await freePort();
      apacheUrl = `http://localhost:${apachePort}`;
      const created = await admin.admin.createOAuthClient({
        workspaceId,
        name: "Apache",
        redirectUris: [`${apacheUrl}/protected/redirect_uri`],
        backchannelLogoutUri: `${apacheUrl}/protected/redirect_uri?logout=backchannel`,
        confidential: true,
        firstParty: true,
      });
      const discovery = `${created.client?.issuer}/.well-known/openid-configuration`;
      await startApache(apachePort, {
        discovery,
        clientId: created.client?.clientId as string,
        secret: created.clientSecret,
      });

      const page = await browser.newPage();
      page.setDefaultTimeout(60_000);
      await page.goto(`${apacheUrl}/protected/`);
      await page.getByLabel("Email").fill(email);
      await page.getByLabel("Password", { exact: true }).fill(password);
      await page.getByRole("button", { name: "Sign in", exact: true }).click();
      await page.waitForURL(
        (url) => url.toString().startsWith(`${apacheUrl}/protected/`),
        waitLong,
      );
      await expect.poll(() => page.textContent("#email"), waitLong).toBe(email);

      // Signing out of Keygate (the browser's session) ends the grant, and Apache hears it.
      await page.goto(`${keygate.url}/ui/`);
      await page.getByRole("button", { name: "Log out" }).click();
      await page.getByRole("heading", { name: "Sign in" }).waitFor();
      // The logout token reaches Apache within a second or so; until then its session holds.
      await expect
        .poll(
          async () => {
            await page.goto(`${apacheUrl}/protected/`);
            return page.url().startsWith(keygate.url);
          },
          { timeout: 15_000, interval: 500 },
        )
        .toBe(true);
      expect(page.url()).toContain("/ui/");
    }, 180_000);
  },
);
