import { ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "../../gen/keygate/v1/errors_pb.js";

/**
 * The reason Keygate gives for an error, as it travels in google.rpc.ErrorInfo.reason: the name
 * of a keygate.v1.ErrorReason value without its prefix. Derived from the generated enum, so it
 * follows the contract without a hand-kept list.
 */
export type KeygateErrorReason = Exclude<keyof typeof ErrorReason, "UNSPECIFIED">;

export { ErrorReason };

/** The domain of every ErrorInfo Keygate sends. */
export const errorDomain = "keygate.dev";

/**
 * The reason of a Keygate error, or undefined for anything else (a network failure, an error
 * from another service, a value that is not an error at all).
 */
export function errorReason(error: unknown): KeygateErrorReason | undefined {
  if (!(error instanceof ConnectError)) return undefined;
  for (const info of error.findDetails(ErrorInfoSchema)) {
    if (info.domain === errorDomain && isReason(info.reason)) return info.reason;
  }
  return undefined;
}

/** True when `error` is a Keygate error with one of the given reasons. */
export function isKeygateError(
  error: unknown,
  ...reasons: KeygateErrorReason[]
): error is ConnectError {
  const reason = errorReason(error);
  return reason !== undefined && (reasons.length === 0 || reasons.includes(reason));
}

function isReason(name: string): name is KeygateErrorReason {
  return (
    name !== "UNSPECIFIED" && typeof (ErrorReason as Record<string, unknown>)[name] === "number"
  );
}
