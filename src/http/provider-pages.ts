import type { NodeServerResponse } from "./types.js";

/** The few pages the provider shows itself: errors nothing can be sent back for, and logout. */

type Res = NodeServerResponse;

const htmlEscapes: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};
const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => htmlEscapes[c] as string);

/** What the user sees when nothing can go back to the client. */
export function errorPage(res: Res, status: number, error: string, description: string) {
  htmlPage(
    res,
    status,
    "Sign-in failed",
    `<h1>Sign-in failed</h1><p>${escapeHtml(description)}</p><p><code>${escapeHtml(error)}</code></p>`,
  );
}

/** Signing out without an ID token naming the session: the person confirms it. */
export function confirmPage(res: Res, params: URLSearchParams, confirmToken: string) {
  const hidden = ["client_id", "post_logout_redirect_uri", "state"]
    .filter((name) => params.has(name))
    .map(
      (name) =>
        `<input type="hidden" name="${name}" value="${escapeHtml(params.get(name) as string)}">`,
    )
    .join("");
  htmlPage(
    res,
    200,
    "Sign out?",
    `<h1>Sign out?</h1><form method="post">${hidden}<input type="hidden" name="confirm" value="yes"><input type="hidden" name="confirm_token" value="${escapeHtml(confirmToken)}"><button type="submit">Sign out</button></form>`,
  );
}

export function htmlPage(res: Res, status: number, title: string, bodyHtml: string) {
  const body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body>${bodyHtml}</body></html>`;
  res.statusCode = status;
  res.setHeader("content-type", "text/html; charset=utf-8");
  res.setHeader(
    "content-security-policy",
    "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
  );
  res.setHeader("x-content-type-options", "nosniff");
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", Buffer.byteLength(body));
  res.end(body);
}
