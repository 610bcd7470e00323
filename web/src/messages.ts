import { durationMs } from "@bufbuild/protobuf/wkt";
import {
  BadRequestSchema,
  Code,
  ConnectError,
  errorReason,
  RetryInfoSchema,
} from "../../src/client/web.js";

/** What to tell a person about a failed call, and which field it is about. */
export function describeError(error: unknown): { message: string; field?: string } {
  if (!(error instanceof ConnectError)) return { message: "Something went wrong. Try again." };
  const reason = errorReason(error);
  const violation = error.findDetails(BadRequestSchema)[0]?.fieldViolations[0];
  const retry = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
  const wait = retry ? Math.max(1, Math.ceil(durationMs(retry) / 1000)) : undefined;
  const after =
    wait === undefined ? "later" : wait < 90 ? `in ${wait} s` : `in ${Math.ceil(wait / 60)} min`;
  switch (reason) {
    case "INVALID_CREDENTIALS":
      return { message: "That email and password do not match.", field: "password" };
    case "CODE_INVALID":
      return { message: "That code or link is wrong, used or expired.", field: "code" };
    case "PASSWORD_TOO_SHORT":
      return {
        message: violation?.description
          ? `Password ${violation.description}.`
          : "That password is too short.",
        field: fieldName(violation?.field) ?? "password",
      };
    case "PASSWORD_TOO_COMMON":
      return {
        message: "That password is too common. Choose another.",
        field: fieldName(violation?.field) ?? "password",
      };
    case "EMAIL_NOT_VERIFIED":
      return { message: "Verify your email address first: enter the code we sent you." };
    case "RATE_LIMITED":
      return { message: `Too many attempts. Try again ${after}.` };
    case "ACCOUNT_LOCKED":
      return { message: `Too many failed sign-ins: this account is locked. Try again ${after}.` };
    case "NOT_FOUND":
    case "FLOW_DISABLED":
      return { message: "This workspace does not exist or does not offer this." };
    case "REFRESH_TOKEN_INVALID":
    case "REFRESH_TOKEN_REUSED":
    case "SESSION_EXPIRED":
    case "UNAUTHENTICATED":
      return { message: "Your session has ended. Sign in again." };
    case "MEMBERSHIP_INACTIVE":
      return { message: "You are no longer an active member of that workspace." };
    case "INVALID_ARGUMENT":
      if (violation)
        return {
          message: `${label(violation.field)} ${violation.description}.`,
          ...(fieldName(violation.field) ? { field: fieldName(violation.field) } : {}),
        };
      return { message: "Check the form and try again." };
  }
  if (error.code === Code.Unavailable || error.code === Code.Unknown)
    return { message: "Keygate cannot be reached. Check your connection and try again." };
  return { message: error.rawMessage || "Something went wrong. Try again." };
}

function fieldName(field: string | undefined): string | undefined {
  if (!field) return undefined;
  const last = field.split(".").pop() as string;
  return last === "new_password" ? "password" : last;
}

function label(field: string): string {
  const name = fieldName(field) ?? field;
  const text = name.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}
