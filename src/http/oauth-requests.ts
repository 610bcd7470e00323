import { decodeJwt } from "jose";
import { clientAssertionType } from "../domain/oauth/client-assertion.js";
import type { PresentedCredentials } from "../domain/oauth/client-authentication.js";
import type { NodeServerRequest } from "./types.js";

/**
 * Reading the plain-HTTP OAuth endpoints' requests (RFC 6749 and the provider's): bodies,
 * forms, client credentials, and the error every refusal of them is.
 */

type Req = NodeServerRequest;

/** An RFC 6749 section 5.2 error answer. */
export class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(description);
  }
}

export const invalidClient = (description: string) =>
  new OAuthError(401, "invalid_client", description, {
    "www-authenticate": 'Basic realm="keygate"',
  });

/**
 * The client's admin key from HTTP Basic (client_id = the key's prefix, client_secret = the
 * key, each form-urlencoded before base64 as RFC 6749 section 2.3.1 says), `Bearer <key>`, or
 * client_id and client_secret in the form (client_secret_post); more than one is refused.
 */
export function clientSecretOf(authorization: string | undefined, form: URLSearchParams): string {
  const posted = single(form, "client_secret");
  const postedId = single(form, "client_id");
  if (authorization !== undefined && posted !== undefined) {
    throw new OAuthError(400, "invalid_request", "use one client authentication method");
  }
  if (authorization === undefined) {
    if (posted === undefined) throw invalidClient("client authentication required");
    return withClientId(postedId, posted);
  }
  const [scheme = "", value = ""] = authorization.trim().split(/\s+/, 2);
  if (scheme.toLowerCase() === "bearer" && value !== "") return value;
  if (scheme.toLowerCase() !== "basic" || value === "") {
    throw invalidClient("use HTTP Basic or Bearer client authentication");
  }
  const decoded = Buffer.from(value, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) throw invalidClient("malformed Basic credentials");
  let id: string;
  let secret: string;
  try {
    id = formDecode(decoded.slice(0, colon));
    secret = formDecode(decoded.slice(colon + 1));
  } catch {
    throw invalidClient("malformed Basic credentials");
  }
  return withClientId(id, secret);
}

/** The key's visible prefix (`kg_` and 8 characters) must be the client_id. */
function withClientId(clientId: string | undefined, secret: string): string {
  if (clientId === undefined || clientId === "" || !secret.startsWith(`${clientId}_`)) {
    throw invalidClient("client_id does not match the client secret");
  }
  return secret;
}

/**
 * An OAuth client's credentials (RFC 6749 section 2.3.1): HTTP Basic (each part
 * form-urlencoded before base64), or client_id and client_secret in the form, or client_id
 * alone for a public client. More than one method is refused.
 */
export function clientCredentialsOf(
  authorization: string | undefined,
  form: URLSearchParams,
): {
  clientId: string;
  secret: string | undefined;
  method: "client_secret_basic" | "client_secret_post" | "none";
} {
  const postedId = single(form, "client_id");
  const posted = single(form, "client_secret");
  if (authorization === undefined) {
    if (postedId === undefined || postedId === "") throw invalidClient("client_id is required");
    return posted === undefined
      ? { clientId: postedId, secret: undefined, method: "none" }
      : { clientId: postedId, secret: posted, method: "client_secret_post" };
  }
  if (posted !== undefined) {
    throw new OAuthError(400, "invalid_request", "use one client authentication method");
  }
  const [scheme = "", value = ""] = authorization.trim().split(/\s+/, 2);
  if (scheme.toLowerCase() !== "basic" || value === "") {
    throw invalidClient("use HTTP Basic client authentication");
  }
  const decoded = Buffer.from(value, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) throw invalidClient("malformed Basic credentials");
  let clientId: string;
  let secret: string;
  try {
    clientId = formDecode(decoded.slice(0, colon));
    secret = formDecode(decoded.slice(colon + 1));
  } catch {
    throw invalidClient("malformed Basic credentials");
  }
  if (postedId !== undefined && postedId !== clientId) {
    throw new OAuthError(400, "invalid_request", "client_id differs from the Basic credentials");
  }
  return { clientId, secret, method: "client_secret_basic" };
}

/** application/x-www-form-urlencoded decoding: `+` is a space. */
function formDecode(text: string): string {
  return decodeURIComponent(text.replace(/\+/g, " "));
}

/** A form parameter sent at most once (RFC 6749 section 3.2); undefined when absent. */
export function single(form: URLSearchParams, name: string): string | undefined {
  const values = form.getAll(name);
  if (values.length > 1) {
    throw new OAuthError(400, "invalid_request", `${name} is sent more than once`);
  }
  return values[0];
}

/** The request body as a form, refusing other content types and bodies over the limit. */
export async function readForm(req: Req, maxBytes: number): Promise<URLSearchParams> {
  return new URLSearchParams(await readBody(req, maxBytes, "application/x-www-form-urlencoded"));
}

/** A JSON body (RFC 7591's client metadata), as parsed. */
export async function readJson(req: Req, maxBytes: number): Promise<unknown> {
  const text = await readBody(req, maxBytes, "application/json");
  try {
    return JSON.parse(text);
  } catch {
    throw new OAuthError(400, "invalid_request", "the body is not JSON");
  }
}

async function readBody(req: Req, maxBytes: number, mediaType: string): Promise<string> {
  const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
  if (type !== mediaType) {
    throw new OAuthError(400, "invalid_request", `send the parameters as ${mediaType}`);
  }
  const tooLarge = () =>
    new OAuthError(413, "invalid_request", `the body is larger than ${maxBytes} bytes`);
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * The client's credentials: a private_key_jwt assertion (RFC 7521 section 4.2; client_id
 * optional, and then the assertion's sub, which the check holds against iss), or a secret
 * or nothing (clientCredentialsOf). An assertion beside a secret is two methods: refused.
 */
export function presentedCredentials(
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

export function queryOf(req: Req): URLSearchParams {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return withoutNul(new URLSearchParams(q < 0 ? "" : url.slice(q + 1)));
}

/** No parameter may hold U+0000: nothing downstream (PostgreSQL text above all) takes it. */
export function withoutNul(params: URLSearchParams): URLSearchParams {
  for (const [name, value] of params) {
    if (name.includes("\0") || value.includes("\0")) {
      throw new OAuthError(400, "invalid_request", "parameters must not contain U+0000");
    }
  }
  return params;
}
