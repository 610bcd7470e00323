import { type Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";

export interface Failure {
  code: Code;
  /** ErrorInfo.reason, the machine-readable why. */
  reason: string | undefined;
  /** The fields of every BadRequest violation, in order. */
  fields: string[];
  error: ConnectError;
}

/** Awaits a call that must fail and takes its error apart; a call that succeeds throws. */
export async function failure(p: Promise<unknown>): Promise<Failure> {
  const error = ConnectError.from(
    await p.then(
      () => new Error("expected the call to fail"),
      (e: unknown) => e,
    ),
  );
  return {
    code: error.code,
    reason: error.findDetails(ErrorInfoSchema)[0]?.reason,
    fields: error
      .findDetails(BadRequestSchema)
      .flatMap((b) => b.fieldViolations.map((v) => v.field)),
    error,
  };
}
