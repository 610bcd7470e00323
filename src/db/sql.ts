import { createHash } from "node:crypto";
import { sql } from "slonik";
import { z } from "zod";

export { sql };

/** Row type for statements whose result is not read (Slonik's `void` alias). */
export const voidRow = z.object({}).strict();

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
