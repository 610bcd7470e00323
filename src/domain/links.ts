/** Links in emails, built from the configured public URL only (SECURITY.md 16). */
export function appLink(publicUrl: string, path: string, token: string): string {
  const url = new URL(path, publicUrl.endsWith("/") ? publicUrl : `${publicUrl}/`);
  url.searchParams.set("token", token);
  return url.toString();
}
