// Runs in piscina's worker threads, which do not go through the TypeScript loader, hence plain
// JavaScript. It only ever sees the pre-hashed password (see password.ts), never the password.
// The synchronous bcryptjs calls are deliberate: this thread has nothing else to do, and the
// async variants would only add yields and timers to the same work.
import { compareSync, hashSync } from "bcryptjs";

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
