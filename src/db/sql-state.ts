/** The SQLSTATE of a driver error, or of the driver error a Slonik error wraps. */
export function sqlStateOf(error: unknown): string | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 3; e = e.cause, depth++) {
    // A server's error carries a severity; a socket's (ECONNRESET) only a code.
    const { code, severity } = e as { code?: unknown; severity?: unknown };
    if (typeof code === "string" && typeof severity === "string") return code;
  }
  return undefined;
}
