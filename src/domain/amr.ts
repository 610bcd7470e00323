/**
 * How a session was signed in: RFC 8176 authentication method references, and the acr
 * derived from them.
 *
 * - `pwd`: the account's password;
 * - `otp`: a code from the membership's authenticator app, or one of its recovery codes;
 * - `hwk` / `swk`: a passkey bound to one authenticator, or synced between devices;
 * - `email`: an emailed code or link. It is not a second factor: whoever reads the mailbox
 *   can also reset the password, so password and emailed code are one factor, the mailbox;
 * - `mfa`: two independent factors (the password or the mailbox, and a membership factor), or
 *   a passkey with user verification, which is possession and a PIN or biometric in one.
 */
export type Amr = "pwd" | "otp" | "hwk" | "swk" | "email" | "mfa";

const order: readonly Amr[] = ["pwd", "email", "otp", "hwk", "swk", "mfa"];

/** Parses stored or claimed values, keeping only known ones, in a stable order. */
export function amrOf(values: readonly string[]): Amr[] {
  const set = new Set(values);
  return order.filter((v) => set.has(v));
}

/**
 * `amr` with one more method proven. `verified` says a passkey checked user verification:
 * alone it is already two factors.
 */
export function withMethod(amr: readonly Amr[], method: Amr, verified = false): Amr[] {
  const next = new Set<Amr>([...amr, method]);
  const membershipFactor = next.has("otp") || next.has("hwk") || next.has("swk");
  const accountFactor = next.has("pwd") || next.has("email");
  if (membershipFactor && (accountFactor || verified)) next.add("mfa");
  return amrOf([...next]);
}

/** "2" for two factors, "phr" when a passkey was one (phishing-resistant), else "1". */
export function acrOf(amr: readonly string[]): "1" | "2" | "phr" {
  if (amr.includes("hwk") || amr.includes("swk")) return amr.includes("mfa") ? "phr" : "1";
  return amr.includes("mfa") ? "2" : "1";
}

/**
 * What of a session's methods carries over into another workspace (SwitchWorkspace): the
 * account's own (password, mailbox), never the factors of the workspace it came from.
 */
export function accountMethods(amr: readonly Amr[]): Amr[] {
  return amr.filter((m) => m === "pwd" || m === "email");
}
