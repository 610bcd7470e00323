// Runs in piscina's worker threads, which do not go through the TypeScript loader, hence plain
// JavaScript. It only ever sees the pre-hashed password (see password.ts), never the password.
// The synchronous bcryptjs calls are deliberate: this thread has nothing else to do, and the
// async variants would only add yields and timers to the same work.
import { getPriority, setPriority } from "node:os";
import { workerData } from "node:worker_threads";
import { compareSync, hashSync } from "bcryptjs";

// Lower this thread's scheduling priority, so that when hashing and serving compete for the
// cores, serving (the event loop, PostgreSQL) runs first. On Linux a nice value belongs to a
// thread, and setpriority(0) changes only the calling one; elsewhere it would change the whole
// process, so there the workers keep the process's priority. Raising the nice value needs no
// privilege; the thread never ends up above the niceness it inherited.
/** @type {{ nice?: number } | undefined} */
const options = workerData;
const nice = options?.nice ?? 0;
if (process.platform === "linux") {
  try {
    if (nice > getPriority()) setPriority(nice);
  } catch {
    // A sandbox that refuses it (seccomp, gVisor): hash at the inherited priority rather than
    // fail every login. PasswordHasher.workerPriority() tells which it is.
  }
}

/** @param {{ prehashed: string; cost: number }} task */
export function hash({ prehashed, cost }) {
  return hashSync(prehashed, cost);
}

/** @param {{ prehashed: string; stored: string }} task */
export function compare({ prehashed, stored }) {
  try {
    return compareSync(prehashed, stored);
  } catch {
    // bcryptjs throws on salts it cannot parse; to the caller that is simply "no match".
    return false;
  }
}

/** The nice value this worker thread runs at. */
export function priority() {
  return getPriority();
}
