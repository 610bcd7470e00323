import { type WorkspaceSettings, workspaceSettingsSchema } from "../../config.js";
import type { Violations } from "../validate.js";

/**
 * The capability flags the API exposes (keygate.v1.WorkspaceSettings), by their stored
 * snake_case names: every key of the stored schema.
 */
export const apiSettingKeys = [
  "signup",
  "reset_password",
  "magic_link",
  "email_verification",
  "require_email_verification",
  "password_min_length",
  "otp_login",
  "access_token_ttl_seconds",
  "refresh_idle_timeout_seconds",
  "session_lifetime_seconds",
  "password_reset",
  "passwordless_otp",
  "otp_ttl_seconds",
  "action_proof_required",
  "mfa",
  "mfa_required_roles",
  "passkey_sign_in",
  "passwordless_only",
  "oauth_dynamic_registration",
  "rate_limits",
] as const satisfies readonly (keyof WorkspaceSettings)[];
export type ApiSettingKey = (typeof apiSettingKeys)[number];
// A stored flag the API cannot set is a flag docs/configuration.md would list in vain.
const everyKeyExposed: Exclude<keyof WorkspaceSettings, ApiSettingKey> extends never
  ? true
  : never = true;
void everyKeyExposed;

/**
 * Settings as the caller sent them: only the keys they set, values not yet checked (an enum
 * number the server does not know arrives as that number and fails validation here).
 */
export type SettingsPatch = Partial<Record<ApiSettingKey, unknown>>;

const isApiKey = (key: string): key is ApiSettingKey =>
  (apiSettingKeys as readonly string[]).includes(key);

/** Checks each given value against the stored schema; violations name `<prefix>.<key>`. */
export function validateSettingsPatch(
  patch: SettingsPatch,
  prefix: string,
  v: Violations,
): Partial<WorkspaceSettings> {
  const valid: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined || !isApiKey(key)) continue;
    const parsed = workspaceSettingsSchema.shape[key].safeParse(value);
    if (parsed.success) valid[key] = parsed.data;
    else {
      // A nested value (rate_limits) names the part that failed: settings.rate_limits.login_ip.limit.
      const issue = parsed.error.issues[0];
      const where = [key, ...(issue?.path ?? []).map(String)].join(".");
      v.add(`${prefix}.${where}`, issue?.message ?? "is not a valid value");
    }
  }
  return valid as Partial<WorkspaceSettings>;
}

/** Checks reset_mask paths: each must name a field of keygate.v1.WorkspaceSettings. */
export function validateResetPaths(
  paths: readonly string[],
  patch: SettingsPatch,
  v: Violations,
): ApiSettingKey[] {
  const keys: ApiSettingKey[] = [];
  for (const path of paths) {
    if (!isApiKey(path)) {
      v.add("reset_mask.paths", `"${path.slice(0, 64)}" is not a workspace setting`);
    } else if (patch[path] !== undefined) {
      v.add("reset_mask.paths", `"${path}" is both set and reset`);
    } else if (!keys.includes(path)) {
      keys.push(path);
    }
  }
  return keys;
}
