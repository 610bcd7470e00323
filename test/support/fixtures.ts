/** Small helpers every suite uses to make its data and its calls. */

let sequence = 0;

/** An address no other test in this run has used (unique across files and instances). */
export function uniqueEmail(tag: string): string {
  return `${tag}-${process.pid}-${Date.now()}-${++sequence}@example.test`;
}

/** Call options that send `token` as the bearer credential. */
export function bearer(token: string): { headers: { authorization: string } } {
  return { headers: { authorization: `Bearer ${token}` } };
}
