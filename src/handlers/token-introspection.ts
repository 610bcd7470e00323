import { create, type JsonObject } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type IntrospectRequest,
  type IntrospectResponse,
  IntrospectResponseSchema,
  type TokenIntrospectionService,
  TokenTypeHint,
} from "../../gen/keygate/v1/token_introspection_service_pb.js";
import { requestMetaKey } from "../context-keys.js";
import type {
  TokenTypeHint as DomainHint,
  Introspection,
  Introspector,
} from "../domain/introspection.js";
import type { JwksSource } from "../http/endpoints.js";
import { callerOf } from "./admin/caller.js";

const hints: Record<TokenTypeHint, DomainHint> = {
  [TokenTypeHint.UNSPECIFIED]: null,
  [TokenTypeHint.ACCESS_TOKEN]: "access_token",
  [TokenTypeHint.REFRESH_TOKEN]: "refresh_token",
};

const requestOf = (r: IntrospectRequest) => ({
  token: r.token,
  hint: hints[r.tokenTypeHint] ?? null,
});

/** RFC 7662 shape: an inactive token answers active=false and nothing else. */
export function introspectResponseOf(i: Introspection): IntrospectResponse {
  if (!i.active) return create(IntrospectResponseSchema, { active: false });
  return create(IntrospectResponseSchema, {
    active: true,
    sub: i.sub,
    workspaceId: i.workspaceId,
    sid: i.sid,
    role: i.role,
    exp: BigInt(i.exp),
    iat: BigInt(i.iat),
    iss: i.iss,
    aud: [...i.aud],
    jti: i.jti,
    tokenType: i.tokenType,
  });
}

/** TokenIntrospectionService; WatchRevocations comes next. */
export function tokenIntrospectionHandlers(
  jwks: JwksSource,
  introspector: Introspector,
): Partial<ServiceImpl<typeof TokenIntrospectionService>> {
  return {
    async introspect(req, ctx: HandlerContext) {
      return introspectResponseOf(await introspector.introspect(callerOf(ctx), requestOf(req)));
    },
    async introspectBatch(req, ctx: HandlerContext) {
      const results = await introspector.introspectBatch(callerOf(ctx), req.tokens.map(requestOf));
      return { results: results.map(introspectResponseOf) };
    },
    async revokeToken(req, ctx: HandlerContext) {
      await introspector.revoke(callerOf(ctx), ctx.values.get(requestMetaKey), {
        token: req.token,
        hint: hints[req.tokenTypeHint] ?? null,
      });
      return {};
    },
    // Public, like /.well-known/jwks.json, and from the same source.
    async getJwks() {
      return { jwks: (await jwks.jwks()) as unknown as JsonObject };
    },
  };
}
