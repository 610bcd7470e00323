import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import type { NodeServerRequest, NodeServerResponse } from "./types.js";

/** Where `npm run build:web` puts the web app (see web/vite.config.ts). */
export const defaultWebAppDir = path.resolve(import.meta.dirname, "../../web/dist");

const prefix = "/ui/";
/** The app's own routes: plain names, no dots, no escapes, no empty segments. */
const appRoute = /^\/ui\/(?:[A-Za-z0-9_-]+\/)*[A-Za-z0-9_-]*$/;

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".woff2": "font/woff2",
  ".webmanifest": "application/manifest+json",
};

/**
 * The page may load its own scripts, styles and images and call its own origin, nothing else;
 * no inline script, no framing, no plugins, forms only to itself.
 */
export const webAppCsp = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const securityHeaders = {
  "content-security-policy": webAppCsp,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  // Links from emails carry their token in the query string: never pass it on.
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

interface Asset {
  readonly body: Buffer;
  readonly type: string;
  readonly cacheControl: string;
}

export interface WebApp {
  /** True when the request is for the web app (and has been answered). */
  serve(req: NodeServerRequest, res: NodeServerResponse): boolean;
}

/**
 * The built web app, served at /ui/. Every file is read into memory at start and looked up by
 * its exact path, so no request can name a file outside the build (no decoding, no joining of
 * paths, no file system access per request). Paths made of plain names only (no dots, no
 * escapes) get index.html: they are the app's own routes (/ui/magic-link?token=… and such).
 */
export async function loadWebApp(
  dir: string,
  options: { workspace?: { id: string; slug: string } | undefined } = {},
): Promise<WebApp> {
  const assets = new Map<string, Asset>();
  let files: string[];
  try {
    files = (await readdir(dir, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile())
      .map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
  } catch {
    files = [];
  }
  for (const file of files) {
    const urlPath = prefix + file.split(path.sep).join("/");
    const type = contentTypes[path.extname(file).toLowerCase()];
    if (!type) continue;
    let body = await readFile(path.join(dir, file));
    if (file === "index.html") body = Buffer.from(withWorkspace(body.toString("utf8"), options));
    assets.set(urlPath, {
      body,
      type,
      // Vite names everything under assets/ by its content hash.
      cacheControl: urlPath.startsWith(`${prefix}assets/`)
        ? "public, max-age=31536000, immutable"
        : "no-cache",
    });
  }
  const index = assets.get(`${prefix}index.html`);

  return {
    serve(req, res) {
      const pathname = (req.url ?? "/").split("?")[0] as string;
      if (pathname === "/ui" || pathname === "/") {
        res.statusCode = 308;
        res.setHeader("location", prefix);
        res.end();
        return true;
      }
      if (!pathname.startsWith(prefix)) return false;
      for (const [name, value] of Object.entries(securityHeaders)) res.setHeader(name, value);
      if (req.method !== "GET" && req.method !== "HEAD") {
        send(res, 405, "method not allowed", { allow: "GET, HEAD" });
        return true;
      }
      if (!index) {
        send(res, 503, "The web app is not built: run `npm run build`.");
        return true;
      }
      const asset = assets.get(pathname) ?? (appRoute.test(pathname) ? index : undefined);
      if (!asset) {
        send(res, 404, "not found");
        return true;
      }
      res.statusCode = 200;
      res.setHeader("content-type", asset.type);
      res.setHeader("content-length", asset.body.length);
      res.setHeader("cache-control", asset.cacheControl);
      if (req.method === "HEAD") res.end();
      else res.end(asset.body);
      return true;
    },
  };
}

function send(res: NodeServerResponse, status: number, text: string, headers = {}) {
  res.statusCode = status;
  res.setHeader("content-type", "text/plain; charset=utf-8");
  res.setHeader("content-length", Buffer.byteLength(text));
  res.setHeader("cache-control", "no-store");
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value as string);
  res.end(text);
}

/** Fills the page's workspace meta tags: the workspace sign-up and sign-in start from. */
function withWorkspace(html: string, options: { workspace?: { id: string; slug: string } }) {
  const attribute = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return html
    .replace(
      /<meta name="keygate-workspace-id" content="[^"]*"/,
      `<meta name="keygate-workspace-id" content="${attribute(options.workspace?.id ?? "")}"`,
    )
    .replace(
      /<meta name="keygate-workspace-slug" content="[^"]*"/,
      `<meta name="keygate-workspace-slug" content="${attribute(options.workspace?.slug ?? "")}"`,
    );
}
