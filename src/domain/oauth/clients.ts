import { randomBytes } from "node:crypto";
import type { DatabaseTransactionConnection } from "slonik";
import { newOpaqueToken, opaqueHash } from "../../crypto/opaque-tokens.js";
import { withTenant } from "../../db/with-tenant.js";
import { NotFoundError } from "../../errors.js";
import {
  deleteOAuthClient as deleteClientRow,
  insertOAuthClient,
  listOAuthClients as listClientRows,
  type OAuthClientRow,
} from "../../repositories/oauth-clients.js";
import { findWorkspaceById } from "../../repositories/workspaces.js";
import {
  auditedCaller,
  type Caller,
  requireWorkspaceAdmin,
  requireWorkspaceRead,
} from "../admin-auth.js";
import { audit } from "../audit.js";
import type { AuthDeps, RequestMeta } from "../deps.js";
import { Violations } from "../validate.js";
import { machineRegistration } from "./machine-clients.js";

export interface CreateOAuthClientInput {
  readonly workspaceId: string;
  readonly name: string;
  readonly redirectUris: readonly string[];
  readonly postLogoutRedirectUris: readonly string[];
  readonly confidential: boolean;
  readonly firstParty: boolean;
  readonly scopes: readonly string[];
  /** Empty for none. */
  readonly backchannelLogoutUri: string;
  /** Empty or absent: authorization_code and refresh_token (see machine-clients.ts). */
  readonly grantTypes?: readonly string[];
  /** Empty or absent: client_secret_basic (confidential) or none (public). */
  readonly tokenEndpointAuthMethod?: string;
  /** A JWK Set as JSON, for private_key_jwt. */
  readonly jwks?: string;
}

const maxUris = 10;
const loopbackHosts = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * Why a redirect URI is refused, or null when it may be registered: absolute, https (http only
 * on a loopback host, RFC 8252 section 7.3; a private-use scheme like com.example.app:/cb for
 * native apps), no fragment (RFC 6749 section 3.1.2), no credentials, no wildcard.
 */
export function redirectUriProblem(uri: string): string | null {
  if (uri.length > 2000) return "is longer than 2000 characters";
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return "is not an absolute URL";
  }
  if (url.hash !== "" || uri.includes("#")) return "must not have a fragment";
  // Stored as the browser will be sent there: a spelling that parses to another URL (a
  // backslash, a control character, an IDN host) would read as one place and lead to another.
  if (url.toString() !== uri) return `is not in its canonical form (${url.toString()})`;
  if (url.username !== "" || url.password !== "") return "must not carry credentials";
  if (uri.includes("*")) return "must not have a wildcard";
  if (url.protocol === "https:") return url.hostname === "" ? "has no host" : null;
  if (url.protocol === "http:") {
    return loopbackHosts.has(url.hostname) ? null : "must be https (http only for loopback hosts)";
  }
  // A native app's private-use scheme: reverse domain notation, RFC 8252 section 7.1.
  if (/^[a-z][a-z0-9+.-]*\.[a-z0-9+.-]+:$/.test(url.protocol)) return null;
  return "must be https, loopback http, or a private-use scheme";
}

/** CreateOAuthClient: the secret (confidential clients) is answered once, kept as a keyed hash. */
export async function createOAuthClient(
  deps: Pick<AuthDeps, "pool" | "clock" | "tokenSecret">,
  meta: RequestMeta,
  caller: Caller,
  input: CreateOAuthClientInput,
): Promise<{ client: OAuthClientRow; secret: string | null }> {
  const v = new Violations()
    .required("workspace_id", input.workspaceId, 100)
    .uuid("workspace_id", input.workspaceId)
    .displayName("name", input.name, 200);
  const machine = await machineRegistration(v, input);
  checkUris(
    v,
    "redirect_uris",
    input.redirectUris,
    machine.grantTypes.includes("authorization_code") ? 1 : 0,
  );
  checkUris(v, "post_logout_redirect_uris", input.postLogoutRedirectUris, 0);
  if (input.backchannelLogoutUri !== "") {
    const problem = redirectUriProblem(input.backchannelLogoutUri);
    if (problem !== null) v.add("backchannel_logout_uri", problem);
    else if (!/^https?:/.test(input.backchannelLogoutUri)) {
      v.add("backchannel_logout_uri", "must be https (http only for loopback hosts)");
    }
  }
  v.throwIfAny();
  requireWorkspaceAdmin(caller, input.workspaceId);
  const secret = machine.hasSecret ? newOpaqueToken("client_secret") : null;
  const now = deps.clock.now();
  const client = await withTenant(deps.pool, input.workspaceId, async (tx) => {
    if ((await findWorkspaceById(tx, input.workspaceId)) === null) {
      throw new NotFoundError("no workspace has this id");
    }
    const row = await insertOAuthClient(tx, {
      workspaceId: input.workspaceId,
      clientId: `kgc_${randomBytes(16).toString("base64url")}`,
      name: input.name.trim(),
      secretHash: secret === null ? null : opaqueHash(deps.tokenSecret, "client_secret", secret),
      redirectUris: [...new Set(input.redirectUris)],
      postLogoutRedirectUris: [...new Set(input.postLogoutRedirectUris)],
      firstParty: input.firstParty,
      scopes: machine.scopes,
      backchannelLogoutUri: input.backchannelLogoutUri === "" ? null : input.backchannelLogoutUri,
      registeredDynamically: false,
      grantTypes: machine.grantTypes,
      tokenEndpointAuthMethod: machine.method,
      jwks: machine.jwks,
      now,
    });
    await audit(tx, deps, meta, {
      type: "oauth_client_created",
      workspaceId: input.workspaceId,
      ...auditedCaller(caller),
      outcome: "success",
      details: {
        client_id: row.client_id,
        confidential: machine.method !== "none",
        grant_types: row.grant_types.join(" "),
        token_endpoint_auth_method: row.token_endpoint_auth_method,
        first_party: row.first_party,
        redirect_uris: row.redirect_uris.join(" "),
      },
    });
    return row;
  });
  return { client, secret };
}

function checkUris(v: Violations, field: string, uris: readonly string[], min: number): void {
  if (uris.length < min) v.add(field, "needs at least one URI");
  if (uris.length > maxUris) v.add(field, `takes at most ${maxUris} URIs`);
  uris.slice(0, maxUris).forEach((uri, i) => {
    const problem = redirectUriProblem(uri);
    if (problem !== null) v.add(`${field}[${i}]`, problem);
  });
}

export async function listOAuthClients(
  deps: Pick<AuthDeps, "pool">,
  caller: Caller,
  workspaceId: string,
): Promise<readonly OAuthClientRow[]> {
  new Violations()
    .required("workspace_id", workspaceId, 100)
    .uuid("workspace_id", workspaceId)
    .throwIfAny();
  requireWorkspaceRead(caller, workspaceId);
  return withTenant(deps.pool, workspaceId, (tx) => listClientRows(tx, workspaceId));
}

/**
 * A workspace admin's change to one of its clients that ends the client's tokens (deletion,
 * secret rotation): `change` runs in the workspace's transaction and refuses a client it does
 * not find; the audit event names the client, and the revocation feed hears of the change
 * once it is committed.
 */
export async function changeOAuthClient<T>(
  deps: Pick<AuthDeps, "pool" | "clock" | "revocations">,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; clientId: string },
  type: "oauth_client_deleted" | "oauth_client_secret_rotated",
  change: (tx: DatabaseTransactionConnection) => Promise<T>,
): Promise<T> {
  new Violations()
    .required("workspace_id", input.workspaceId, 100)
    .uuid("workspace_id", input.workspaceId)
    .required("client_id", input.clientId, 100)
    .throwIfAny();
  requireWorkspaceAdmin(caller, input.workspaceId);
  const result = await withTenant(deps.pool, input.workspaceId, async (tx) => {
    const result = await change(tx);
    await audit(tx, deps, meta, {
      type,
      workspaceId: input.workspaceId,
      ...auditedCaller(caller),
      outcome: "success",
      details: { client_id: input.clientId },
    });
    return result;
  });
  await deps.revocations.changed();
  return result;
}

/** DeleteOAuthClient: its grants' sessions go with it, and with them their tokens everywhere. */
export function deleteOAuthClient(
  deps: Pick<AuthDeps, "pool" | "clock" | "revocations">,
  meta: RequestMeta,
  caller: Caller,
  input: { workspaceId: string; clientId: string },
): Promise<void> {
  return changeOAuthClient(deps, meta, caller, input, "oauth_client_deleted", async (tx) => {
    if (!(await deleteClientRow(tx, input.workspaceId, input.clientId))) {
      throw new NotFoundError("no client of this workspace has this id");
    }
  });
}
