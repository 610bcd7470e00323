import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  BadRequest_FieldViolationSchema,
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "../../gen/google/rpc/error_details_pb.js";
import type { LoginResponse } from "../../gen/keygate/v1/auth_service_pb.js";
import { CallLog } from "../call-log.js";
import { peerAddressKey, requestIdKey, servingLaneKey } from "../context-keys.js";
import {
  AlreadyExistsError,
  type DomainError,
  type FieldViolation,
  type Reason,
} from "../errors.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { classifyError } from "./classify-error.js";

export const errorDomain = "keygate.dev";

type OutgoingDetail = { desc: DescMessage; value: MessageShape<DescMessage> };

const codeOfKind: Record<DomainError["kind"], Code> = {
  invalid_argument: Code.InvalidArgument,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
};

/** The reason given to errors that did not come from a domain error. */
const reasonOfCode: Partial<Record<Code, Reason>> = {
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  // connect-es's own RESOURCE_EXHAUSTED is a message over the size limits; the rate limits
  // are domain errors with a reason of their own.
  [Code.ResourceExhausted]: "REQUEST_TOO_LARGE",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
};

function errorInfo(reason: Reason, metadata: Record<string, string> = {}) {
  return {
    desc: ErrorInfoSchema,
    value: create(ErrorInfoSchema, { reason, domain: errorDomain, metadata }),
  };
}

function fromDomainError(error: DomainError): ConnectError {
  const details: OutgoingDetail[] = [errorInfo(error.reason)];
  const violations =
    "violations" in error && Array.isArray(error.violations)
      ? (error.violations as FieldViolation[])
      : error instanceof AlreadyExistsError && error.field
        ? [{ field: error.field, description: error.message, reason: "ALREADY_EXISTS" }]
        : [];
  if (violations.length > 0) {
    details.push({
      desc: BadRequestSchema,
      value: create(BadRequestSchema, {
        fieldViolations: violations.map((v) =>
          create(BadRequest_FieldViolationSchema, {
            field: v.field,
            description: v.description,
            reason: v.reason ?? "",
          }),
        ),
      }),
    });
  }
  if ("retryAfterMs" in error && typeof error.retryAfterMs === "number") {
    details.push({
      desc: RetryInfoSchema,
      value: create(RetryInfoSchema, { retryDelay: durationFromMs(Math.ceil(error.retryAfterMs)) }),
    });
  }
  return new ConnectError(error.message, codeOfKind[error.kind], undefined, details);
}

/**
 * The one place errors become Connect errors, after classifyError (which the RFC 6749
 * endpoints share). Domain errors keep their code and reason; Connect's own errors
 * (unimplemented, deadline exceeded, undecodable input) get a reason; a lost database is
 * UNAVAILABLE; anything else is logged with its stack and answered as a bare INTERNAL that
 * leaks nothing. Also writes the one log line per call through `callLog`
 * (which samples successful hot-path calls) and counts every call in the metrics.
 */
export function errorInterceptor(
  logger: Logger,
  metrics?: Metrics,
  callLog: CallLog = new CallLog(logger, { sampleEvery: 1 }),
): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = req.contextValues.get(requestIdKey);
    const method = `${req.service.typeName}/${req.method.name}`;
    const line = () => ({
      requestId,
      method,
      protocol: req.requestMethod === "GET" ? "connect-get" : req.header.get("content-type"),
      peer: req.contextValues.get(peerAddressKey),
      workspace: req.header.get("x-workspace-id") ?? undefined,
      lane: req.contextValues.get(servingLaneKey),
      durationMs: Math.round((performance.now() - started) * 100) / 100,
    });
    const observe = (code: string, reason?: string, loginStep = false) =>
      metrics?.observeCall({
        service: req.service.typeName,
        method: req.method.name,
        code,
        seconds: (performance.now() - started) / 1000,
        reason,
        loginStep,
      });
    const succeeded = (message?: unknown) => {
      callLog.ok(method, () => ({ ...line(), code: "ok" }));
      // Login answers either tokens or a pending second step (typed, so that a renamed case
      // fails to compile instead of silently counting every second step as a success).
      const pending =
        (message as Partial<LoginResponse> | undefined)?.result?.case === "pendingLogin";
      observe("ok", undefined, pending);
    };
    const fail = (error: unknown): ConnectError => {
      let ce: ConnectError;
      const classified = error instanceof ConnectError ? undefined : classifyError(error);
      if (error instanceof ConnectError) {
        ce = error;
        if (ce.findDetails(ErrorInfoSchema).length === 0) {
          ce = new ConnectError(ce.rawMessage, ce.code, ce.metadata, [
            ...ce.details.filter((d) => "desc" in d),
            errorInfo(reasonOfCode[ce.code] ?? "UNAVAILABLE"),
          ]);
        }
      } else if (classified?.kind === "domain") {
        ce = fromDomainError(classified.error);
      } else if (classified?.kind === "exists") {
        // The constraint names the key.
        ce = new ConnectError("already exists", Code.AlreadyExists, undefined, [
          errorInfo("ALREADY_EXISTS", { constraint: classified.constraint }),
        ]);
      } else if (classified?.kind === "unavailable") {
        ce = new ConnectError("service unavailable, retry later", Code.Unavailable, undefined, [
          errorInfo("UNAVAILABLE"),
        ]);
        logger.warn({ ...line(), err: error }, "database unavailable");
      } else {
        logger.error({ ...line(), err: error }, "unexpected error");
        ce = new ConnectError("internal error", Code.Internal);
      }
      const codeName = Code[ce.code].replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase());
      const level = ce.code === Code.Internal || ce.code === Code.Unknown ? "error" : "warn";
      const reason = ce.findDetails(ErrorInfoSchema)[0]?.reason;
      callLog[level]({ ...line(), code: codeName, reason });
      observe(codeName, reason);
      return ce;
    };
    // A server stream fails while it is read, after next() returned: guard its messages too,
    // and log the call when the stream ends.
    async function* guarded<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
      try {
        yield* messages;
      } catch (error) {
        throw fail(error);
      }
      succeeded();
    }
    try {
      const res = await next(req);
      if (res.stream) return { ...res, message: guarded(res.message) };
      succeeded(res.message);
      return res;
    } catch (error) {
      throw fail(error);
    }
  };
}
