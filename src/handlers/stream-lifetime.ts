/**
 * A signal that aborts with the call's or after about `maxAgeMs` (90-100% of it, so that
 * clients that connected together do not all reconnect together). Watch handlers end their
 * stream with OK when it fires; clients reconnect and resume.
 */
export function streamLifetime(signal: AbortSignal, maxAgeMs: number): AbortSignal {
  return AbortSignal.any([
    signal,
    AbortSignal.timeout(Math.round(maxAgeMs * (0.9 + Math.random() * 0.1))),
  ]);
}
