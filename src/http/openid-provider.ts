import type { CallLog } from "../call-log.js";
import type { RequestMeta } from "../domain/deps.js";
import {
  type AuthorizeOutcome,
  authorize,
  type BrowserCookies,
  resume,
  workspaceIssuer,
} from "../domain/oauth/authorize.js";
import { assertionAlgorithms } from "../domain/oauth/client-assertion.js";
import {
  type ClientCredentialsAnswer,
  clientCredentialsGrant,
  requireGrantType,
} from "../domain/oauth/client-credentials.js";
import { endSession } from "../domain/oauth/end-session.js";
import { OAuthProtocolError } from "../domain/oauth/errors.js";
import { registerClient } from "../domain/oauth/registration.js";
import { parseResources } from "../domain/oauth/resources.js";
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
import { oauthCallLogger } from "./oauth.js";
import {
  OAuthError,
  presentedCredentials,
  queryOf,
  readForm,
  readJson,
  single,
  withoutNul,
} from "./oauth-requests.js";
import { confirmPage, errorPage, htmlPage } from "./provider-pages.js";
import type { NodeServerRequest, NodeServerResponse } from "./types.js";

type Req = NodeServerRequest;
type Res = NodeServerResponse;
type Handler = (req: Req, res: Res) => Promise<void>;

const browserCookie = "kg_browser";
const providerSessionCookie = "kg_provider_session";
const browserCookieMaxAge = 400 * 86_400;

export interface ProviderHttpDeps {
  readonly provider: TokenDeps;
  /** What a workspace's provider offers; null for no workspace (discovery answers 404). */
  providerFeatures(workspaceId: string): Promise<{ readonly dynamicRegistration: boolean } | null>;
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

  const metadataOf = (workspaceId: string, features: { readonly dynamicRegistration: boolean }) => {
    const issuer = workspaceIssuer(base, workspaceId);
    return {
      issuer,
      authorization_endpoint: `${issuer}/oauth2/authorize`,
      token_endpoint: `${issuer}/oauth2/token`,
      ...(features.dynamicRegistration
        ? { registration_endpoint: `${issuer}/oauth2/register` }
        : {}),
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
      const features = await deps.providerFeatures(workspaceId);
      if (features === null) throw new OAuthError(404, "invalid_request", "no such provider");
      // Short: a workspace that turns registration on or off is seen within the minute.
      json(res, 200, metadataOf(workspaceId, features), { "cache-control": "public, max-age=60" });
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
      // RFC 8707 section 2: resource alone may be repeated, once per resource.
      for (const name of new Set(form.keys())) if (name !== "resource") single(form, name);
      const client = await authenticateClient(
        deps.provider,
        workspaceId,
        presentedCredentials(req.headers.authorization, form),
        meta,
      );
      const grantType = form.get("grant_type");
      const resources = parseResources(form.getAll("resource"), deps.provider);
      let answer: TokenAnswer | ClientCredentialsAnswer;
      if (grantType === "authorization_code") {
        requireGrantType(client, grantType);
        answer = await exchangeCode(deps.provider, meta, client, {
          code: form.get("code") ?? "",
          redirectUri: form.get("redirect_uri") ?? undefined,
          codeVerifier: form.get("code_verifier") ?? undefined,
          resources,
        });
      } else if (grantType === "refresh_token") {
        requireGrantType(client, grantType);
        answer = await refreshGrant(
          deps.provider,
          meta,
          client,
          form.get("refresh_token") ?? "",
          resources,
        );
      } else if (grantType === "client_credentials") {
        answer = await clientCredentialsGrant(deps.provider, client, {
          scope: form.get("scope") ?? undefined,
          resources,
        });
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

  const registerHandler = (workspaceId: string) =>
    logged("register", async (req, res, meta) => {
      if (req.method !== "POST") {
        throw new OAuthError(405, "invalid_request", "use POST", { allow: "POST" });
      }
      const body = await readJson(req, deps.maxRequestBytes);
      json(res, 201, await registerClient(deps.provider, meta, workspaceId, body), noStore);
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
      if (wellKnown) return crossOrigin(discovery((wellKnown[1] as string).toLowerCase()));
      const match = workspacePath.exec(path);
      if (!match) return undefined;
      const workspaceId = (match[1] as string).toLowerCase();
      switch (match[2]) {
        case "/.well-known/openid-configuration":
          return crossOrigin(discovery(workspaceId));
        case "/oauth2/authorize":
          return authorizeHandler(workspaceId);
        case "/oauth2/authorize/resume":
          return resumeHandler(workspaceId);
        case "/oauth2/token":
          return crossOrigin(tokenHandler(workspaceId));
        case "/oauth2/register":
          return crossOrigin(registerHandler(workspaceId));
        case "/oauth2/userinfo":
          return crossOrigin(userinfoHandler(workspaceId));
        case "/oauth2/end_session":
          return endSessionHandler(workspaceId);
        default:
          return undefined;
      }
    },
  };
}

/**
 * The endpoints a browser app calls by script (discovery, token, userinfo, registration) may be
 * read from any origin: none of them looks at cookies (credentials are never allowed), so a
 * page of another origin gains nothing it could not get with curl. Authorization and logout
 * are navigations and stay same-origin.
 */
function crossOrigin(handler: Handler): Handler {
  return async (req, res) => {
    res.setHeader("access-control-allow-origin", "*");
    res.setHeader("access-control-expose-headers", "WWW-Authenticate, X-Request-Id");
    if (req.method === "OPTIONS") {
      res.statusCode = 204;
      res.setHeader("access-control-allow-methods", "GET, POST");
      res.setHeader("access-control-allow-headers", "Authorization, Content-Type");
      res.setHeader("access-control-max-age", "7200");
      res.setHeader("content-length", 0);
      res.end();
      return;
    }
    await handler(req, res);
  };
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

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
