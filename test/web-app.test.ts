import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configFromEnv } from "../src/config.js";
import { webAppCsp } from "../src/http/web-app.js";
import { startTestKeygate, type TestKeygate } from "./support/server.js";
import { linkIn, startSmtpServer } from "./support/smtp.js";
import { buildWebApp } from "./support/web-app.js";

// The web app as files over HTTP (what the browser test then drives): content types,
// headers, routes, and requests that try to leave the build directory.
let keygate: TestKeygate;
let plain: TestKeygate;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;

beforeAll(async () => {
  smtp = await startSmtpServer();
  keygate = await startTestKeygate(
    { KEYGATE_UI: "true", KEYGATE_SMTP_URL: smtp.url },
    { webAppDir: await buildWebApp() },
  );
  plain = await startTestKeygate();
}, 180_000);
afterAll(async () => {
  await keygate?.stop();
  await plain?.stop();
  await smtp?.stop();
});

const get = (path: string, init: RequestInit = {}) =>
  fetch(`${keygate.url}${path}`, { redirect: "manual", ...init });

describe("KEYGATE_UI", () => {
  it("is off unless set, and sends email links to the web app when on", () => {
    expect(configFromEnv({}).ui).toBe(false);
    expect(configFromEnv({}).publicUrl).toBe("http://127.0.0.1:8080");
    expect(configFromEnv({ KEYGATE_UI: "true" }).publicUrl).toBe("http://127.0.0.1:8080/ui");
    expect(
      configFromEnv({ KEYGATE_UI: "true", KEYGATE_PUBLIC_URL: "https://id.example.test" })
        .publicUrl,
    ).toBe("https://id.example.test");
  });

  it("is not served when off", async () => {
    const res = await fetch(`${plain.url}/ui/`);
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toBe("application/json");
  });
});

describe("the web app at /ui/", () => {
  it("answers the page with its security and cache headers and the starting workspace", async () => {
    const res = await get("/ui/");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("content-security-policy")).toBe(webAppCsp);
    expect(webAppCsp).toContain("script-src 'self'");
    expect(webAppCsp).not.toContain("unsafe-inline");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    const html = await res.text();
    expect(html).toContain(
      `<meta name="keygate-workspace-id" content="${keygate.bootstrapped?.workspaceId}"`,
    );
    expect(html).toContain('<meta name="keygate-workspace-slug" content="default"');
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script
  });

  it("serves hashed assets with their content types, cached for good", async () => {
    const html = await (await get("/ui/")).text();
    const script = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    const style = /href="(\/ui\/assets\/[^"]+\.css)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    expect(style).toBeDefined();
    const js = await get(script as string);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    const css = await get(style as string);
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    const icon = await get("/ui/favicon.svg");
    expect(icon.headers.get("content-type")).toBe("image/svg+xml");
    expect(icon.headers.get("cache-control")).toBe("no-cache");
    const head = await get(script as string, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
  });

  it("answers its own routes (the email links) with the page, and / and /ui redirect to it", async () => {
    for (const route of ["/ui/magic-link?token=abc", "/ui/reset-password?token=abc", "/ui/x/y"]) {
      const res = await get(route);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain("keygate-workspace-id");
    }
    for (const path of ["/", "/ui"]) {
      const res = await get(path);
      expect(res.status).toBe(308);
      expect(res.headers.get("location")).toBe("/ui/");
    }
  });

  it("never answers a file outside the build", async () => {
    // Sent byte for byte (fetch would normalise the dots away before they reach the server).
    const raw = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const url = new URL(keygate.url);
        http
          .get({ host: url.hostname, port: url.port, path }, (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (c: string) => {
              body += c;
            });
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
          })
          .on("error", reject);
      });
    for (const path of [
      "/ui/../package.json",
      "/ui/%2e%2e/package.json",
      "/ui/..%2fpackage.json",
      "/ui/assets/../../../package.json",
      "/ui/assets/..%2f..%2f..%2fpackage.json",
      "/ui/%2e%2e%2f%2e%2e%2fsrc%2fconfig.ts",
      "/ui/....//....//package.json",
      "/ui//etc/passwd",
      "/ui/index.html%00.js",
      "/ui/assets/missing.js",
    ]) {
      const res = await raw(path);
      expect({ path, status: res.status }).toEqual({ path, status: 404 });
      expect(res.body).toBe("not found");
    }
  });

  it("refuses methods other than GET and HEAD", async () => {
    const res = await get("/ui/", { method: "POST", body: "x" });
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("GET, HEAD");
  });

  it("links emails to the web app's routes", async () => {
    const email = `ui-link-${Date.now()}@example.test`;
    const workspaceId = keygate.bootstrapped?.workspaceId as string;
    await fetch(`${keygate.url}/keygate.v1.AuthService/SignUp`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-workspace-id": workspaceId },
      body: JSON.stringify({ email, password: "correct horse battery staple" }),
    });
    await fetch(`${keygate.url}/keygate.v1.AuthService/RequestMagicLink`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email, workspaceId }),
    });
    const mail = await smtp.waitFor((m) => m.to.includes(email) && /magic-link/.test(m.raw));
    expect(new URL(linkIn(mail).url).pathname).toBe("/ui/magic-link");
  });
});
