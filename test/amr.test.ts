import { describe, expect, it } from "vitest";
import { accountMethods, acrOf, amrOf, withMethod } from "../src/domain/amr.js";

// Which methods make two factors (src/domain/amr.ts): a domain rule, tested without a server.
describe("amr and acr", () => {
  it("counts a factor of the membership after the password or the mailbox as two", () => {
    expect(withMethod(["pwd"], "otp")).toEqual(["pwd", "otp", "mfa"]);
    expect(withMethod(["email"], "otp")).toEqual(["email", "otp", "mfa"]);
    expect(withMethod(["pwd"], "hwk")).toEqual(["pwd", "hwk", "mfa"]);
    expect(acrOf(withMethod(["pwd"], "otp"))).toBe("2");
    expect(acrOf(withMethod(["pwd"], "swk"))).toBe("phr");
  });

  it("never counts the password and the mailbox as two: the mailbox resets the password", () => {
    expect(withMethod(["pwd"], "email")).toEqual(["pwd", "email"]);
    expect(acrOf(["pwd", "email"])).toBe("1");
  });

  it("counts a passkey alone as two factors only when it checked user verification", () => {
    expect(withMethod([], "swk", true)).toEqual(["swk", "mfa"]);
    expect(withMethod([], "hwk", false)).toEqual(["hwk"]);
    expect(acrOf(["hwk"])).toBe("1");
    expect(acrOf(["hwk", "mfa"])).toBe("phr");
  });

  it("keeps only known values, once each, in one order, whatever is stored", () => {
    expect(amrOf(["mfa", "otp", "pwd", "otp", "bogus", ""])).toEqual(["pwd", "otp", "mfa"]);
    expect(acrOf([])).toBe("1");
  });

  it("carries only the account's own proofs into another workspace", () => {
    expect(accountMethods(["pwd", "otp", "mfa"])).toEqual(["pwd"]);
    expect(accountMethods(["email", "hwk", "mfa"])).toEqual(["email"]);
  });
});
