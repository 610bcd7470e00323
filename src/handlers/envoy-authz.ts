import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type HeaderValueOption,
  HeaderValueOption_HeaderAppendAction,
  HeaderValueOptionSchema,
} from "../../gen/envoy/config/core/v3/base_pb.js";
import {
  type Authorization,
  type CheckResponse,
  CheckResponseSchema,
} from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { StatusCode } from "../../gen/envoy/type/v3/http_status_pb.js";
import { isOpaqueToken } from "../crypto/opaque-tokens.js";
import type { Introspector } from "../domain/introspection.js";
import { callerOf } from "./admin/caller.js";

/** gRPC status codes in google.rpc.Status. */
const grpcOk = 0;
const grpcUnauthenticated = 16;
const grpcPermissionDenied = 7;
const maxTokenLength = 8192;

const header = (key: string, value: string): HeaderValueOption =>
  create(HeaderValueOptionSchema, {
    header: { key, value },
    // Overwrite whatever the client sent under these names: the upstream must be able to
    // trust them. `append` is for Envoys older than append_action.
    append: false,
    appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
  });

function deny(
  grpcCode: number,
  status: StatusCode,
  error: "invalid_token" | "insufficient_scope",
  description: string,
): CheckResponse {
  return create(CheckResponseSchema, {
    status: { code: grpcCode, message: description },
    httpResponse: {
      case: "deniedResponse",
      value: {
        status: { code: status },
        headers: [
          header(
            "www-authenticate",
            `Bearer realm="keygate", error="${error}", error_description="${description}"`,
          ),
          header("content-type", "application/json"),
          header("cache-control", "no-store"),
        ],
        body: JSON.stringify({ error, error_description: description }),
      },
    },
  });
}

const unauthorized = (description: string) =>
  deny(grpcUnauthenticated, StatusCode.Unauthorized, "invalid_token", description);

/** The identity headers Keygate sets; whichever a token does not fill are removed. */
const identityHeaders = [
  "x-user-id",
  "x-workspace-id",
  "x-session-id",
  "x-role",
  "x-amr",
  "x-acr",
  "x-client-id",
  "x-scope",
] as const;
type IdentityHeader = (typeof identityHeaders)[number];

/**
 * The route's RFC 8707 resource, from the filter's per-route `check_settings`
 * (`context_extensions: { keygate_resource: "https://api.example" }`): such a route takes the
 * tokens issued for that resource, a user's through a client and a client's own, and no
 * others; a route without one takes Keygate's own sessions' tokens.
 */
export const resourceExtension = "keygate_resource";
/**
 * With a resource, the workspace whose tokens the route takes (`keygate_workspace_id`); it may
 * be left out when the filter's admin key is scoped to one workspace.
 */
export const workspaceExtension = "keygate_workspace_id";

/**
 * envoy.service.auth.v3.Authorization for Envoy's ext_authz filter: the request's bearer
 * access token goes through the same Introspector (and cache) as Introspect, asked about the
 * route's resource when it names one. A refresh token is no API credential and is refused
 * without a lookup. When the request names a workspace in x-workspace-id it must be the
 * token's (403 otherwise), as with Keygate's own RPCs. The upstream gets the caller in
 * x-user-id, x-workspace-id, x-session-id, x-role, x-amr, x-acr, and for a token issued to a
 * client x-client-id and x-scope; a client's own token has no user, so its request carries
 * no x-user-id (nor session, role, amr, acr). Every one of these headers the answer does not
 * set is removed, so none a caller sent reaches the upstream. Errors about the caller (its
 * admin key) or UNAVAILABLE are answered as gRPC errors, which Envoy turns into a denial
 * unless failure_mode_allow is set.
 */
export function envoyAuthorizationHandlers(
  introspector: Introspector,
): ServiceImpl<typeof Authorization> {
  return {
    async check(req, ctx: HandlerContext) {
      const caller = callerOf(ctx);
      const headers = req.attributes?.request?.http?.headers ?? {};
      const token = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(headers.authorization ?? "")?.[1];
      if (!token) return unauthorized("a bearer access token is required");
      if (token.length > maxTokenLength || isOpaqueToken("refresh", token)) {
        return unauthorized("the access token is invalid");
      }
      const extensions = req.attributes?.contextExtensions ?? {};
      const resource = extensions[resourceExtension] || null;
      const result = await introspector.introspect(caller, {
        token,
        hint: "access_token",
        resource,
        workspaceId: extensions[workspaceExtension] || null,
      });
      if (!result.active) return unauthorized("the access token is invalid, expired or revoked");
      // An upstream behind a route without a resource expects a user in every request.
      if (result.subject !== "user" && resource === null) {
        return unauthorized("a client's own token is taken only on a route with a resource");
      }
      const workspace = headers["x-workspace-id"];
      if (workspace !== undefined && workspace !== result.workspaceId) {
        return deny(
          grpcPermissionDenied,
          StatusCode.Forbidden,
          "insufficient_scope",
          "x-workspace-id does not match the token's workspace",
        );
      }
      const set: Partial<Record<IdentityHeader, string>> =
        result.subject === "client"
          ? {
              "x-workspace-id": result.workspaceId,
              "x-client-id": result.clientId,
              "x-scope": result.scopes.join(" "),
            }
          : {
              "x-user-id": result.sub,
              "x-workspace-id": result.workspaceId,
              "x-session-id": result.sid,
              "x-role": result.role,
              "x-amr": result.amr.join(" "),
              "x-acr": result.acr,
              ...(result.clientId === null
                ? {}
                : { "x-client-id": result.clientId, "x-scope": result.scopes.join(" ") }),
            };
      return create(CheckResponseSchema, {
        status: { code: grpcOk },
        httpResponse: {
          case: "okResponse",
          value: {
            headers: Object.entries(set).map(([key, value]) => header(key, value)),
            headersToRemove: identityHeaders.filter((name) => set[name] === undefined),
          },
        },
      });
    },
  };
}
