import { describe, expect, it } from "vitest";
import { NotFoundError } from "../src/errors.js";
import { classifyError } from "../src/interceptors/classify-error.js";

const serverError = (code: string) =>
  Object.assign(new Error(`server said ${code}`), { code, severity: "ERROR" });

describe("classifyError, shared by the Connect interceptor and the RFC 6749 endpoints", () => {
  it("keeps a flow's refusal, and calls a database that went away unavailable, not a bug", () => {
    const refusal = new NotFoundError("no such thing");
    expect(classifyError(refusal)).toEqual({ kind: "domain", error: refusal });
    for (const lost of [
      serverError("40001"), // serialization failure
      serverError("40P01"), // deadlock
      serverError("25006"), // a standby, or a demoted primary
      serverError("57P01"), // admin shutdown
      new Error("wrapped", { cause: serverError("57P03") }),
      Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }),
      new Error("Connection terminated unexpectedly"),
    ]) {
      expect({ message: lost.message, ...classifyError(lost) }).toEqual({
        message: lost.message,
        kind: "unavailable",
      });
    }
  });

  it("calls anything else unexpected, a constraint violation that is no unique key included", () => {
    for (const bug of [
      new TypeError("x is undefined"),
      serverError("23503"), // foreign key
      serverError("42P01"), // undefined table
      "a string thrown",
      undefined,
    ]) {
      expect(classifyError(bug).kind).toBe("unexpected");
    }
  });
});
