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

/**
 * envoy.service.auth.v3.Authorization for Envoy's ext_authz filter: the request's bearer
 * access token goes through the same Introspector (and cache) as Introspect. A refresh token
 * is no API credential and is refused without a lookup. When the request names a workspace
 * in x-workspace-id it must be the token's (403 otherwise), as with Keygate's own RPCs.
 * Errors about the caller (its admin key) or UNAVAILABLE are answered as gRPC errors, which
 * Envoy turns into a denial unless failure_mode_allow is set.
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
      const result = await introspector.introspect(caller, { token, hint: "access_token" });
      if (!result.active) return unauthorized("the access token is invalid, expired or revoked");
      // The headers below name a user; a client's own token (client_credentials) has none.
      if (result.subject !== "user") return unauthorized("the access token is not a user's");
      const workspace = headers["x-workspace-id"];
      if (workspace !== undefined && workspace !== result.workspaceId) {
        return deny(
          grpcPermissionDenied,
          StatusCode.Forbidden,
          "insufficient_scope",
          "x-workspace-id does not match the token's workspace",
        );
      }
      return create(CheckResponseSchema, {
        status: { code: grpcOk },
        httpResponse: {
          case: "okResponse",
          value: {
            headers: [
              header("x-user-id", result.sub),
              header("x-workspace-id", result.workspaceId),
              header("x-session-id", result.sid),
              header("x-role", result.role),
              header("x-amr", result.amr.join(" ")),
              header("x-acr", result.acr),
            ],
          },
        },
      });
    },
  };
}
