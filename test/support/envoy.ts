import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Authorization } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { bearer } from "./fixtures.js";

/** What Envoy does with the upstream request after a Check: headers set, headers removed. */
export interface EnvoyDecision {
  readonly allowed: boolean;
  readonly grpcCode: number;
  readonly set: Record<string, string>;
  readonly removed: readonly string[];
  readonly body: string;
}

/**
 * Envoy's ext_authz call over gRPC with the generated client: a request's headers, and the
 * route's `context_extensions` as its per-route check_settings would send them.
 */
export function envoyChecker(baseUrl: string, adminKey: string) {
  const envoy = createClient(Authorization, createGrpcTransport({ baseUrl }));
  return async (
    headers: Record<string, string>,
    contextExtensions: Record<string, string> = {},
  ): Promise<EnvoyDecision> => {
    const res = await envoy.check(
      {
        attributes: { request: { http: { method: "GET", path: "/", headers } }, contextExtensions },
      },
      bearer(adminKey),
    );
    const answer = res.httpResponse;
    const set: Record<string, string> = {};
    const options = answer.case === undefined ? [] : answer.value.headers;
    for (const option of options) if (option.header) set[option.header.key] = option.header.value;
    return {
      allowed: answer.case === "okResponse",
      grpcCode: res.status?.code ?? 0,
      set,
      removed: answer.case === "okResponse" ? answer.value.headersToRemove : [],
      body: answer.case === "deniedResponse" ? answer.value.body : "",
    };
  };
}
