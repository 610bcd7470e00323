/**
 * The scopes the provider knows. `openid` asks for an ID token; `email` for the address and
 * whether the account proved it; `profile` for nothing more yet (accounts have no name);
 * `offline_access` is accepted (a grant always gets a rotating refresh token).
 */
export const supportedScopes: readonly string[] = ["openid", "profile", "email", "offline_access"];

/** The scope parameter as a list (RFC 6749 section 3.3), duplicates dropped, order kept. */
export function parseScope(scope: string | undefined): string[] {
  if (scope === undefined) return [];
  return [...new Set(scope.split(" ").filter((s) => s !== ""))];
}
