// The parts of the contract a caller of Keygate needs, shared by the Node and browser entries.
export { Code, ConnectError } from "@connectrpc/connect";
export * from "../../gen/google/rpc/error_details_pb.js";
export * from "../../gen/keygate/v1/admin_service_pb.js";
export * from "../../gen/keygate/v1/auth_service_pb.js";
export * from "../../gen/keygate/v1/factor_service_pb.js";
export * from "../../gen/keygate/v1/oauth_service_pb.js";
export * from "../../gen/keygate/v1/otp_service_pb.js";
export * from "../../gen/keygate/v1/token_introspection_service_pb.js";
export * from "../../gen/keygate/v1/types_pb.js";
export type { KeygateClient, KeygateClientCommonOptions } from "./core.js";
export {
  ErrorReason,
  errorDomain,
  errorReason,
  isKeygateError,
  type KeygateErrorReason,
} from "./errors.js";
export {
  memoryTokenStore,
  parseStoredTokens,
  type StoredTokens,
  storedTokensOf,
  type TokenStore,
} from "./tokens.js";
