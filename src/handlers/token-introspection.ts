import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type IntrospectRequest,
  type IntrospectResponse,
  IntrospectResponseSchema,
  RevocationKind,
  type TokenIntrospectionService,
  TokenTypeHint,
  type WatchRevocationsResponse,
  WatchRevocationsResponseSchema,
} from "../../gen/keygate/v1/token_introspection_service_pb.js";
import { requestMetaKey } from "../context-keys.js";
import type {
  TokenTypeHint as DomainHint,
  Introspection,
  Introspector,
} from "../domain/introspection.js";
import type { RevocationRow } from "../domain/model.js";
import { type FeedDeps, type FeedEvent, watchRevocations } from "../domain/revocation-feed.js";
import type { JwksSource } from "../http/endpoints.js";
import { callerOf } from "./admin/caller.js";
import { streamLifetime } from "./stream-lifetime.js";

const hints: Record<TokenTypeHint, DomainHint> = {
  [TokenTypeHint.UNSPECIFIED]: null,
  [TokenTypeHint.ACCESS_TOKEN]: "access_token",
  [TokenTypeHint.REFRESH_TOKEN]: "refresh_token",
};

const requestOf = (r: IntrospectRequest) => ({
  token: r.token,
  hint: hints[r.tokenTypeHint] ?? null,
  resource: r.resource,
  workspaceId: r.workspaceId,
});

/** The message of each answer the Introspector keeps (frozen: one per cached token). */
const responses = new WeakMap<Introspection, IntrospectResponse>();

/**
 * RFC 7662 shape: an inactive token answers active=false and nothing else. For an answer the
 * Introspector keeps (frozen), the message is frozen and the same each time, so the lean lane
 * encodes it once (see createFastLane); any other answer gets a message of its own (a WeakMap
 * entry per call would keep each through the next young collection).
 */
export function introspectResponseOf(i: Introspection): IntrospectResponse {
  if (!Object.isFrozen(i)) return responseOf(i);
  let response = responses.get(i);
  if (!response) {
    response = responseOf(i);
    Object.freeze(response.aud);
    Object.freeze(response.amr);
    Object.freeze(response);
    responses.set(i, response);
  }
  return response;
}

function responseOf(i: Introspection): IntrospectResponse {
  if (!i.active) return create(IntrospectResponseSchema, { active: false });
  // A client's own token has no user: sub, sid, role, amr and acr stay empty.
  const token = {
    active: true,
    workspaceId: i.workspaceId,
    exp: BigInt(i.exp),
    iat: BigInt(i.iat),
    iss: i.iss,
    aud: [...i.aud],
    jti: i.jti,
    tokenType: i.tokenType,
    clientId: i.clientId ?? "",
    scope: i.scopes.join(" "),
  };
  if (i.subject === "client") return create(IntrospectResponseSchema, token);
  return create(IntrospectResponseSchema, {
    ...token,
    sub: i.sub,
    sid: i.sid,
    role: i.role,
    amr: [...i.amr],
    acr: i.acr,
  });
}

const kinds: Record<RevocationRow["kind"], RevocationKind> = {
  session: RevocationKind.SESSION,
  user: RevocationKind.USER,
  membership: RevocationKind.MEMBERSHIP,
  workspace: RevocationKind.WORKSPACE,
  signing_key: RevocationKind.SIGNING_KEY,
};

function eventOf(e: FeedEvent): WatchRevocationsResponse {
  switch (e.kind) {
    case "revocation":
      return create(WatchRevocationsResponseSchema, {
        event: {
          case: "revocation",
          value: {
            cursor: String(e.row.cursor),
            kind: kinds[e.row.kind],
            workspaceId: e.row.workspace_id ?? "",
            userId: e.row.user_id ?? "",
            sessionId: e.row.session_id ?? "",
            kid: e.row.kid ?? "",
            cutOffTime: timestampFromMs(e.row.cut_off_time),
            expireTime: timestampFromMs(e.row.expire_time),
          },
        },
      });
    case "snapshot_complete":
      return create(WatchRevocationsResponseSchema, {
        event: {
          case: "snapshotComplete",
          value: { cursor: String(e.cursor), workspaceId: e.workspaceId ?? "" },
        },
      });
    case "heartbeat":
      return create(WatchRevocationsResponseSchema, {
        event: {
          case: "heartbeat",
          value: { cursor: String(e.cursor), time: timestampFromMs(e.time.getTime()) },
        },
      });
  }
}

export function tokenIntrospectionHandlers(deps: {
  jwks: JwksSource;
  introspector: Introspector;
  feed: FeedDeps;
  /** A WatchRevocations stream ends (OK) after about this long; verifiers resume by cursor. */
  watchMaxAgeMs?: number;
}): ServiceImpl<typeof TokenIntrospectionService> {
  const { jwks, introspector } = deps;
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
    async *watchRevocations(req, ctx: HandlerContext) {
      for await (const event of watchRevocations(
        deps.feed,
        callerOf(ctx),
        req.cursor,
        streamLifetime(ctx.signal, deps.watchMaxAgeMs ?? 30 * 60_000),
      )) {
        yield eventOf(event);
      }
    },
    // Public, like /.well-known/jwks.json, and from the same source.
    async getJwks() {
      return { jwks: (await jwks.jwks()) as unknown as JsonObject };
    },
  };
}
