import type { JsonObject } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { TokenIntrospectionService } from "../../gen/keygate/v1/token_introspection_service_pb.js";
import type { JwksSource } from "../http/endpoints.js";

/** TokenIntrospectionService; Introspect, IntrospectBatch and WatchRevocations come next. */
export function tokenIntrospectionHandlers(
  jwks: JwksSource,
): Partial<ServiceImpl<typeof TokenIntrospectionService>> {
  return {
    // Public, like /.well-known/jwks.json, and from the same source.
    async getJwks() {
      return { jwks: (await jwks.jwks()) as unknown as JsonObject };
    },
  };
}
