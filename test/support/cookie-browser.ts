/** A browser: follows nothing by itself, keeps the cookies it is given. */
export class CookieBrowser {
  private readonly jar = new Map<string, string>();
  async get(url: string) {
    const res = await fetch(url, {
      redirect: "manual",
      headers: { cookie: [...this.jar].map(([k, v]) => `${k}=${v}`).join("; ") },
    });
    for (const cookie of res.headers.getSetCookie()) {
      const [pair = ""] = cookie.split(";");
      const eq = pair.indexOf("=");
      this.jar.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    return res;
  }
  cookies() {
    return new Map(this.jar);
  }
}
