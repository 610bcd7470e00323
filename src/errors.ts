import type { ErrorReason } from "../gen/keygate/v1/errors_pb.js";

/**
 * Domain errors: typed classes with a stable reason (the names of keygate.v1.ErrorReason
 * without their prefix). Flows throw these; one interceptor turns them into Connect errors.
 */

/** Every reason keygate.v1.ErrorReason defines, so that the two cannot drift apart. */
export type Reason = Exclude<keyof typeof ErrorReason, "UNSPECIFIED">;

export interface FieldViolation {
  readonly field: string;
  readonly description: string;
  readonly reason?: string;
}

export abstract class DomainError extends Error {
  abstract readonly kind:
    | "invalid_argument"
    | "unauthenticated"
    | "permission_denied"
    | "not_found"
    | "already_exists"
    | "failed_precondition"
    | "resource_exhausted"
    | "unavailable";
  readonly reason: Reason;
  constructor(reason: Reason, message: string) {
    super(message);
    this.reason = reason;
    this.name = new.target.name;
  }
}

export class InvalidArgumentError extends DomainError {
  readonly kind = "invalid_argument";
  readonly violations: readonly FieldViolation[];
  constructor(
    violations: readonly FieldViolation[],
    reason: Reason = "INVALID_ARGUMENT",
    message = violations.map((v) => `${v.field}: ${v.description}`).join("; "),
  ) {
    super(reason, message);
    this.violations = violations;
  }
}

export class UnauthenticatedError extends DomainError {
  readonly kind = "unauthenticated";
}

export class PermissionDeniedError extends DomainError {
  readonly kind = "permission_denied";
}

export class NotFoundError extends DomainError {
  readonly kind = "not_found";
  constructor(message = "not found", reason: Reason = "NOT_FOUND") {
    super(reason, message);
  }
}

export class AlreadyExistsError extends DomainError {
  readonly kind = "already_exists";
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super("ALREADY_EXISTS", message);
  }
}

export class FailedPreconditionError extends DomainError {
  readonly kind = "failed_precondition";
}

export class RateLimitedError extends DomainError {
  readonly kind = "resource_exhausted";
  constructor(
    readonly retryAfterMs: number,
    reason: Reason = "RATE_LIMITED",
    message = "too many requests, retry later",
  ) {
    super(reason, message);
  }
}

export class UnavailableError extends DomainError {
  readonly kind = "unavailable";
  constructor(message = "service unavailable, retry later", reason: Reason = "UNAVAILABLE") {
    super(reason, message);
  }
}
