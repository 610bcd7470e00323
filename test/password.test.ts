import { randomBytes } from "node:crypto";
import { getPriority } from "node:os";
import { hashSync } from "bcryptjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { normalizePassword, PasswordHasher, PasswordPolicy } from "../src/crypto/password.js";
import { InvalidArgumentError } from "../src/errors.js";

describe("PasswordHasher", () => {
  const hasher = new PasswordHasher({ cost: 10, workers: 2 });
  afterAll(async () => {
    await hasher.close();
  });

  it("verifies the password it hashed and nothing else", async () => {
    const stored = await hasher.hash("correct horse battery staple");
    expect(stored).toMatch(/^\$2b\$10\$/);
    expect(await hasher.verify("correct horse battery staple", stored)).toEqual({
      ok: true,
      needsRehash: false,
    });
    expect(await hasher.verify("correct horse battery stapler", stored)).toEqual({
      ok: false,
      needsRehash: false,
    });
  });

  it("salts: the same password hashes differently each time", async () => {
    const [a, b] = await Promise.all([hasher.hash("same"), hasher.hash("same")]);
    expect(a).not.toBe(b);
  });

  it("an unknown user (null) is not ok, and still costs a compare in the pool", async () => {
    const before = hasher.stats.completed;
    expect(await hasher.verify("anything", null)).toEqual({ ok: false, needsRehash: false });
    expect(hasher.stats.completed).toBe(before + 1);
  });

  it("malformed stored hashes are not ok and do not throw", async () => {
    const good = await hasher.hash("pw");
    for (const stored of [
      "",
      "plaintext",
      good.slice(0, -1),
      `${good}x`,
      good.replace("$2b$", "$3b$"),
      good.replace("$10$", "$99$"),
      good.replace("$10$", "$03$"),
      `$2b$10$${"!".repeat(53)}`,
    ]) {
      expect(await hasher.verify("pw", stored), stored).toEqual({ ok: false, needsRehash: false });
    }
  });

  it("SECURITY.md 2: no truncation at 72 bytes", async () => {
    const prefix = "a".repeat(80);
    const first = `${prefix}${"b".repeat(20)}`;
    const second = `${prefix}${"c".repeat(20)}`;
    expect(Buffer.byteLength(first)).toBe(100);
    expect(Buffer.byteLength(second)).toBe(100);
    const stored = await hasher.hash(first);
    expect((await hasher.verify(second, stored)).ok).toBe(false);
    expect((await hasher.verify(first, stored)).ok).toBe(true);
  });

  it("NFKC: fullwidth letters verify against their ASCII form, and the other way round", async () => {
    const fullwidth = "ｃｏｒｒｅｃｔ　ｈｏｒｓｅ１２３";
    expect(normalizePassword(fullwidth)).toBe("correct horse123");
    expect((await hasher.verify("correct horse123", await hasher.hash(fullwidth))).ok).toBe(true);
    expect((await hasher.verify(fullwidth, await hasher.hash("correct horse123"))).ok).toBe(true);
  });

  it("a 256-character password hashes and verifies", async () => {
    const long = `${"x".repeat(255)}y`;
    const stored = await hasher.hash(long);
    expect((await hasher.verify(long, stored)).ok).toBe(true);
    expect((await hasher.verify(`${"x".repeat(255)}z`, stored)).ok).toBe(false);
  });

  it("an emoji and CJK password hashes and verifies", async () => {
    const unicode = "🔐 正しい馬の電池ホチキス 🐴🔋📎";
    const stored = await hasher.hash(unicode);
    expect((await hasher.verify(unicode, stored)).ok).toBe(true);
    expect((await hasher.verify("🔐 正しい馬の電池ホチキス 🐴🔋", stored)).ok).toBe(false);
  });

  it("needsRehash is true when the stored cost differs from the configured one", async () => {
    const costlier = new PasswordHasher({ cost: 11, workers: 1 });
    try {
      const stored = await hasher.hash("rehash me");
      expect(await costlier.verify("rehash me", stored)).toEqual({ ok: true, needsRehash: true });
      expect(await hasher.verify("rehash me", stored)).toEqual({ ok: true, needsRehash: false });
      // A wrong password never asks for a rehash, whatever the cost.
      expect(await costlier.verify("not me", stored)).toEqual({ ok: false, needsRehash: false });
    } finally {
      await costlier.close();
    }
  });

  it("SECURITY.md 3: hashing runs off the event loop", async () => {
    const before = hasher.stats.completed;
    let ticks = 0;
    const timer = setInterval(() => {
      ticks++;
    }, 1);
    try {
      await Promise.all(["one", "two", "three", "four"].map((p) => hasher.hash(p)));
    } finally {
      clearInterval(timer);
    }
    // bcryptjs on this thread would hold it for the whole of each hash; in the pool the main
    // thread keeps turning while the four run.
    expect(ticks).toBeGreaterThan(3);
    expect(hasher.stats.completed).toBe(before + 4);
  });

  it("reports its pool", () => {
    expect(hasher.stats).toEqual({
      queued: 0,
      workers: 2,
      completed: expect.any(Number),
      waitP50Ms: expect.any(Number),
      waitP99Ms: expect.any(Number),
    });
    expect(hasher.stats.waitP99Ms).toBeGreaterThanOrEqual(hasher.stats.waitP50Ms);
  });

  it("refuses a cost below 10", () => {
    expect(() => new PasswordHasher({ cost: 9, workers: 1 })).toThrow(RangeError);
    expect(() => new PasswordHasher({ cost: 4, workers: 1 })).toThrow(RangeError);
  });

  it("refuses a nice value outside 0 to 19", () => {
    expect(() => new PasswordHasher({ cost: 10, workers: 1, nice: 20 })).toThrow(RangeError);
    expect(() => new PasswordHasher({ cost: 10, workers: 1, nice: -1 })).toThrow(RangeError);
  });
});

describe.runIf(process.platform === "linux")("PasswordHasher worker priority", () => {
  it("lowers the worker threads' priority and leaves the serving thread's alone", async () => {
    const before = getPriority();
    const nice = Math.max(before, 7);
    const niced = new PasswordHasher({ cost: 10, workers: 2, nice });
    const plain = new PasswordHasher({ cost: 10, workers: 1 });
    try {
      // Two tasks at once, so that both threads are likely to answer one.
      const answers = await Promise.all([niced.workerPriority(), niced.workerPriority()]);
      expect(answers).toEqual([nice, nice]);
      expect(await plain.workerPriority()).toBe(before);
      // The nice value is the thread's own: this thread, which serves, is unchanged.
      expect(getPriority()).toBe(before);
      // And the niced workers still hash.
      expect((await niced.verify("pw", await niced.hash("pw"))).ok).toBe(true);
    } finally {
      await Promise.all([niced.close(), plain.close()]);
    }
  });
});

describe("PasswordHasher stored-hash compatibility", () => {
  it("does not accept a bcrypt hash of the raw password (every password is pre-hashed)", async () => {
    const hasher = new PasswordHasher({ cost: 10, workers: 1 });
    try {
      const raw = hashSync("short and raw", 10);
      expect((await hasher.verify("short and raw", raw)).ok).toBe(false);
    } finally {
      await hasher.close();
    }
  });
});

describe("PasswordPolicy", () => {
  let policy: PasswordPolicy;
  beforeAll(async () => {
    policy = await PasswordPolicy.load();
  });

  function refusal(password: string, opts: { minLength: number; field?: string }) {
    try {
      policy.check(password, opts);
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidArgumentError);
      return error as InvalidArgumentError;
    }
    throw new Error("expected the password to be refused");
  }

  it("refuses a password shorter than the minimum, on the given field", () => {
    const error = refusal("short12", { minLength: 8, field: "new_password" });
    expect(error.reason).toBe("PASSWORD_TOO_SHORT");
    expect(error.violations).toHaveLength(1);
    expect(error.violations[0]?.field).toBe("new_password");
    expect(error.violations[0]?.reason).toBe("PASSWORD_TOO_SHORT");
    expect(error.message).not.toContain("short12");
  });

  it("reports on the field password by default", () => {
    expect(refusal("short12", { minLength: 8 }).violations[0]?.field).toBe("password");
  });

  it("counts code points after NFKC, not UTF-16 units or bytes", () => {
    // Eight emoji are 16 UTF-16 units and 32 bytes, but eight characters.
    expect(() => policy.check("🐴".repeat(8), { minLength: 8 })).not.toThrow();
    expect(refusal("🐴".repeat(7), { minLength: 8 }).reason).toBe("PASSWORD_TOO_SHORT");
    // The ligature "ﬃ" is one code point that NFKC expands to "ffi".
    expect(() => policy.check("ﬃﬃ12", { minLength: 8 })).not.toThrow();
  });

  it("refuses 1025 characters and accepts 256 and 1024", () => {
    const error = refusal(`${"q".repeat(1024)}z`, { minLength: 8, field: "pw" });
    expect(error.reason).toBe("INVALID_ARGUMENT");
    expect(error.violations[0]?.field).toBe("pw");
    expect(() => policy.check("k".repeat(256), { minLength: 8 })).not.toThrow();
    expect(() => policy.check("k".repeat(1024), { minLength: 8 })).not.toThrow();
  });

  it("refuses common passwords, whatever their case or width", () => {
    for (const common of ["password1", "qwerty123", "PassWord1", "ｑｗｅｒｔｙ１２３"]) {
      const error = refusal(common, { minLength: 8, field: "new_password" });
      expect(error.reason, common).toBe("PASSWORD_TOO_COMMON");
      expect(error.violations[0]?.field).toBe("new_password");
    }
  });

  it("accepts a random 20-character password, with no composition rules", () => {
    const random = randomBytes(15).toString("base64url");
    expect(random).toHaveLength(20);
    expect(() => policy.check(random, { minLength: 8 })).not.toThrow();
    expect(() => policy.check("lowercase only and long", { minLength: 8 })).not.toThrow();
  });
});
