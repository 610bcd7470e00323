import { decodeJwt } from "jose";
import type { CallLog } from "../call-log.js";
import type { RequestMeta } from "../domain/deps.js";
import {
  type AuthorizeOutcome,
  authorize,
  type BrowserCookies,
  resume,
  workspaceIssuer,
} from "../domain/oauth/authorize.js";
import { assertionAlgorithms, clientAssertionType } from "../domain/oauth/client-assertion.js";
import type { PresentedCredentials } from "../domain/oauth/client-authentication.js";
import {
  type ClientCredentialsAnswer,
  clientCredentialsGrant,
  requireGrantType,
} from "../domain/oauth/client-credentials.js";
import { endSession } from "../domain/oauth/end-session.js";
import { OAuthProtocolError } from "../domain/oauth/errors.js";
import { supportedScopes } from "../domain/oauth/scopes.js";
import {
  authenticateClient,
  exchangeCode,
  refreshGrant,
  type TokenAnswer,
  type TokenDeps,
  userinfo,
} from "../domain/oauth/token.js";
import type { Logger } from "../log.js";
import { json } from "./endpoints.js";
import { clientCredentialsOf, OAuthError, oauthCallLogger, readForm, single } from "./oauth.js";
import type { NodeServerRequest, NodeServerResponse } from "./types.js";

type Req = NodeServerRequest;
type Res = NodeServerResponse;
type Handler = (req: Req, res: Res) => Promise<void>;

const browserCookie = "kg_browser";
const providerSessionCookie = "kg_provider_session";
const browserCookieMaxAge = 400 * 86_400;

export interface ProviderHttpDeps {
  readonly provider: TokenDeps;
  /** Whether a workspace exists (discovery answers 404 for one that does not). */
  workspaceExists(workspaceId: string): Promise<boolean>;
  readonly logger: Logger;
  readonly callLog?: CallLog;
  readonly maxRequestBytes: number;
  requestMeta(req: Req): RequestMeta;
}

/**
 * Each workspace's OpenID Provider (docs/openid-provider.md), under its issuer
 * `<KEYGATE_ISSUER>/w/<workspace id>`: discovery (and RFC 8414's form of it), the
 * authorization endpoint and its resume step, the token endpoint and userinfo. Answers the
 * paths it knows (resolve answers undefined for any other).
 */
export function openIdProviderRoutes(deps: ProviderHttpDeps) {
  const base = deps.provider.issuerBase;
  const basePath = new URL(base).pathname.replace(/\/+$/, "");
  const secure = new URL(base).protocol === "https:";
  const logged = oauthCallLogger(deps);
  const noStore = { "cache-control": "no-store", pragma: "no-cache" };
  const uuid = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
  const workspacePath = new RegExp(`^${escapeRegExp(basePath)}/w/(${uuid})(/.*)$`);
  const wellKnownRfc8414 = new RegExp(
    `^/\\.well-known/oauth-authorization-server${escapeRegExp(basePath)}/w/(${uuid})$`,
  );

  const metadataOf = (workspaceId: string) => {
    const issuer = workspaceIssuer(base, workspaceId);
    return {
      issuer,
      authorization_endpoint: `${issuer}/oauth2/authorize`,
      token_endpoint: `${issuer}/oauth2/token`,
      userinfo_endpoint: `${issuer}/oauth2/userinfo`,
      end_session_endpoint: `${issuer}/oauth2/end_session`,
      backchannel_logout_supported: true,
      backchannel_logout_session_supported: true,
      jwks_uri: `${base}/.well-known/jwks.json`,
      scopes_supported: supportedScopes,
      response_types_supported: ["code"],
      response_modes_supported: ["query"],
      grant_types_supported: ["authorization_code", "refresh_token", "client_credentials"],
      subject_types_supported: ["public"],
      id_token_signing_alg_values_supported: ["RS256"],
      token_endpoint_auth_methods_supported: [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
      ],
      token_endpoint_auth_signing_alg_values_supported: [...assertionAlgorithms],
      code_challenge_methods_supported: ["S256"],
      prompt_values_supported: ["none", "login", "consent", "select_account"],
      claims_supported: [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "at_hash",
        "sid",
        "amr",
        "acr",
        "azp",
        "email",
        "email_verified",
      ],
      authorization_response_iss_parameter_supported: true,
      claims_parameter_supported: false,
      request_parameter_supported: false,
      request_uri_parameter_supported: false,
    };
  };

  const discovery = (workspaceId: string) =>
    logged("GET openid-configuration", async (req, res) => {
      if (req.method !== "GET" && req.method !== "HEAD") {
        throw new OAuthError(405, "invalid_request", "use GET", { allow: "GET, HEAD" });
      }
      if (!(await deps.workspaceExists(workspaceId))) {
        throw new OAuthError(404, "invalid_request", "no such provider");
      }
      json(res, 200, metadataOf(workspaceId), { "cache-control": "public, max-age=300" });
    });

  const authorizeHandler = (workspaceId: string) =>
    logged("authorize", async (req, res, meta) => {
      let params: URLSearchParams;
      if (req.method === "GET" || req.method === "HEAD") params = queryOf(req);
      else if (req.method === "POST")
        params = withoutNul(await readForm(req, deps.maxRequestBytes));
      else throw new OAuthError(405, "invalid_request", "use GET or POST", { allow: "GET, POST" });
      const outcome = await authorize(deps.provider, meta, workspaceId, params, cookiesOf(req));
      answerAuthorize(res, workspaceId, outcome);
    });

  const resumeHandler = (workspaceId: string) =>
    logged("authorize/resume", async (req, res) => {
      if (req.method !== "GET") {
        throw new OAuthError(405, "invalid_request", "use GET", { allow: "GET" });
      }
      const query = queryOf(req);
      const outcome = await resume(
        deps.provider,
        workspaceId,
        query.get("request") ?? "",
        query.get("answer") ?? "",
        cookiesOf(req),
      );
      answerAuthorize(res, workspaceId, outcome);
    });

  const tokenHandler = (workspaceId: string) =>
    logged("token", async (req, res, meta) => {
      if (req.method !== "POST") {
        throw new OAuthError(405, "invalid_request", "use POST", { allow: "POST" });
      }
      const form = withoutNul(await readForm(req, deps.maxRequestBytes));
      for (const name of new Set(form.keys())) single(form, name);
      const client = await authenticateClient(
        deps.provider,
        workspaceId,
        presentedCredentials(req.headers.authorization, form),
        meta,
      );
      const grantType = form.get("grant_type");
      let answer: TokenAnswer | ClientCredentialsAnswer;
      if (grantType === "authorization_code") {
        requireGrantType(client, grantType);
        answer = await exchangeCode(deps.provider, meta, client, {
          code: form.get("code") ?? "",
          redirectUri: form.get("redirect_uri") ?? undefined,
          codeVerifier: form.get("code_verifier") ?? undefined,
        });
      } else if (grantType === "refresh_token") {
        requireGrantType(client, grantType);
        answer = await refreshGrant(deps.provider, meta, client, form.get("refresh_token") ?? "");
      } else if (grantType === "client_credentials") {
        answer = await clientCredentialsGrant(
          deps.provider,
          meta,
          client,
          form.get("scope") ?? undefined,
        );
      } else if (grantType === null) {
        throw new OAuthError(400, "invalid_request", "grant_type is required");
      } else {
        throw new OAuthError(
          400,
          "unsupported_grant_type",
          "use authorization_code, refresh_token or client_credentials",
        );
      }
      json(res, 200, answer, noStore);
    });

  const userinfoHandler = (workspaceId: string) =>
    logged("userinfo", async (req, res) => {
      if (req.method !== "GET" && req.method !== "POST") {
        throw new OAuthError(405, "invalid_request", "use GET or POST", { allow: "GET, POST" });
      }
      const [scheme = "", token = ""] = (req.headers.authorization ?? "").trim().split(/\s+/, 2);
      try {
        if (scheme.toLowerCase() !== "bearer" || token === "") {
          throw new OAuthProtocolError(
            "invalid_token",
            "send the access token as a Bearer token",
            401,
          );
        }
        json(res, 200, await userinfo(deps.provider, workspaceId, token), noStore);
      } catch (error) {
        // RFC 6750 section 3: the challenge names the error.
        if (error instanceof OAuthProtocolError) {
          res.setHeader(
            "www-authenticate",
            `Bearer error="${error.error}", error_description="${error.description}"`,
          );
        }
        throw error;
      }
    });

  const endSessionHandler = (workspaceId: string) =>
    logged("end_session", async (req, res, meta) => {
      let params: URLSearchParams;
      if (req.method === "GET" || req.method === "HEAD") params = queryOf(req);
      else if (req.method === "POST")
        params = withoutNul(await readForm(req, deps.maxRequestBytes));
      else throw new OAuthError(405, "invalid_request", "use GET or POST", { allow: "GET, POST" });
      const outcome = await endSession(
        deps.provider,
        meta,
        workspaceId,
        params,
        cookiesOf(req),
        req.method === "POST" && params.get("confirm") === "yes"
          ? (params.get("confirm_token") ?? "")
          : null,
      );
      if (outcome.kind === "page") {
        errorPage(res, outcome.status, "invalid_request", outcome.message);
        return;
      }
      if (outcome.kind === "confirm") {
        confirmPage(res, params, outcome.confirmToken);
        return;
      }
      // The browser's provider session is over, whichever session the hint named.
      res.setHeader(
        "set-cookie",
        `${providerSessionCookie}=; Max-Age=0; Path=${basePath}/w/${workspaceId}/; HttpOnly; SameSite=Lax${secure ? "; Secure" : ""}`,
      );
      if (outcome.kind === "redirect") {
        res.statusCode = 303;
        res.setHeader("location", outcome.location);
        res.setHeader("cache-control", "no-store");
        res.setHeader("content-length", 0);
        res.end();
        return;
      }
      htmlPage(res, 200, "Signed out", "<h1>Signed out</h1><p>You are signed out.</p>");
    });

  const answerAuthorize = (res: Res, workspaceId: string, outcome: AuthorizeOutcome) => {
    if (outcome.kind === "page") {
      errorPage(res, outcome.status, outcome.error, outcome.description);
      return;
    }
    const path = `${basePath}/w/${workspaceId}/`;
    const cookies: string[] = [];
    const attributes = `Path=${path}; HttpOnly; SameSite=Lax${secure ? "; Secure" : ""}`;
    if (outcome.browser !== undefined) {
      cookies.push(
        `${browserCookie}=${outcome.browser}; Max-Age=${browserCookieMaxAge}; ${attributes}`,
      );
    }
    if (outcome.providerSession !== undefined) {
      cookies.push(
        `${providerSessionCookie}=${outcome.providerSession.value}; Max-Age=${outcome.providerSession.maxAgeSeconds}; ${attributes}`,
      );
    }
    if (cookies.length > 0) res.setHeader("set-cookie", cookies);
    res.statusCode = 303;
    res.setHeader("location", outcome.location);
    res.setHeader("cache-control", "no-store");
    res.setHeader("referrer-policy", "no-referrer");
    res.setHeader("content-length", 0);
    res.end();
  };

  return {
    /** The handler of a provider path, or undefined when the path is not one. */
    resolve(path: string): Handler | undefined {
      const wellKnown = wellKnownRfc8414.exec(path);
      if (wellKnown) return discovery((wellKnown[1] as string).toLowerCase());
      const match = workspacePath.exec(path);
      if (!match) return undefined;
      const workspaceId = (match[1] as string).toLowerCase();
      switch (match[2]) {
        case "/.well-known/openid-configuration":
          return discovery(workspaceId);
        case "/oauth2/authorize":
          return authorizeHandler(workspaceId);
        case "/oauth2/authorize/resume":
          return resumeHandler(workspaceId);
        case "/oauth2/token":
          return tokenHandler(workspaceId);
        case "/oauth2/userinfo":
          return userinfoHandler(workspaceId);
        case "/oauth2/end_session":
          return endSessionHandler(workspaceId);
        default:
          return undefined;
      }
    },
  };
}

/**
 * The client's credentials: a private_key_jwt assertion (RFC 7521 section 4.2; client_id
 * optional, and then the assertion's sub, which the check holds against iss), or a secret
 * or nothing (clientCredentialsOf). An assertion beside a secret is two methods: refused.
 */
function presentedCredentials(
  authorization: string | undefined,
  form: URLSearchParams,
): PresentedCredentials {
  const type = form.get("client_assertion_type");
  const assertion = form.get("client_assertion");
  if (type === null && assertion === null) return clientCredentialsOf(authorization, form);
  if (authorization !== undefined || form.has("client_secret")) {
    throw new OAuthError(400, "invalid_request", "use one client authentication method");
  }
  if (type !== clientAssertionType) {
    throw new OAuthError(
      401,
      "invalid_client",
      `client_assertion_type must be ${clientAssertionType}`,
    );
  }
  if (assertion === null || assertion === "") {
    throw new OAuthError(401, "invalid_client", "client_assertion is required");
  }
  let clientId = form.get("client_id");
  if (clientId === null) {
    try {
      const sub = decodeJwt(assertion).sub;
      clientId = typeof sub === "string" ? sub : "";
    } catch {
      throw new OAuthError(401, "invalid_client", "the client assertion is malformed");
    }
  }
  return { clientId, assertion, method: "private_key_jwt" };
}

function queryOf(req: Req): URLSearchParams {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return withoutNul(new URLSearchParams(q < 0 ? "" : url.slice(q + 1)));
}

/** No parameter may hold U+0000: nothing downstream (PostgreSQL text above all) takes it. */
function withoutNul(params: URLSearchParams): URLSearchParams {
  for (const [name, value] of params) {
    if (name.includes("\0") || value.includes("\0")) {
      throw new OAuthError(400, "invalid_request", "parameters must not contain U+0000");
    }
  }
  return params;
}

function cookiesOf(req: Req): BrowserCookies {
  const found: Record<string, string> = {};
  const header = req.headers.cookie;
  for (const part of (Array.isArray(header) ? header.join(";") : (header ?? "")).split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    // The first of a name wins: the most specific path comes first (RFC 6265 section 5.4).
    if (!(name in found)) found[name] = part.slice(eq + 1).trim();
  }
  return { browser: found[browserCookie], providerSession: found[providerSessionCookie] };
}

const htmlEscapes: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};
const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => htmlEscapes[c] as string);

/** What the user sees when nothing can go back to the client. */
function errorPage(res: Res, status: number, error: string, description: string) {
  htmlPage(
    res,
    status,
    "Sign-in failed",
    `<h1>Sign-in failed</h1><p>${escapeHtml(description)}</p><p><code>${escapeHtml(error)}</code></p>`,
  );
}

/** Signing out without an ID token naming the session: the person confirms it. */
function confirmPage(res: Res, params: URLSearchParams, confirmToken: string) {
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

function htmlPage(res: Res, status: number, title: string, bodyHtml: string) {
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

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
