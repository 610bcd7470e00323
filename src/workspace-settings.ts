import { z } from "zod";

/**
 * The shapes and built-in values of what a workspace may set (its settings, single rate
 * limits) and of the deployment's rate limits: read from the environment by config.ts, from
 * the database and the API by the domain.
 */

/** The rate limits every public flow goes through; each holds per workspace and subject. */
export const rateLimitNames = [
  "login_ip",
  "login_account",
  "signup_ip",
  "signup_address",
  "password_reset_ip",
  "password_reset_address",
  "magic_link_ip",
  "magic_link_address",
  "verification_address",
  "otp_send_address",
  "code_verify_ip",
  "oauth_client_ip",
  "oauth_authorize_ip",
  "oauth_register_ip",
  "oauth_client_auth_ip",
  "deployment_ip",
  "passkey_challenge_ip",
] as const;
export type RateLimitName = (typeof rateLimitNames)[number];

const rateLimitRule = z.object({
  limit: z.number().int().min(1).max(100_000),
  window_seconds: z
    .number()
    .int()
    .min(1)
    .max(7 * 86_400),
});
export type RateLimitRule = z.infer<typeof rateLimitRule>;
export const rateLimitsSchema = z.object(
  Object.fromEntries(rateLimitNames.map((n) => [n, rateLimitRule])) as Record<
    RateLimitName,
    typeof rateLimitRule
  >,
);
export type RateLimits = z.infer<typeof rateLimitsSchema>;

export const builtInRateLimits: RateLimits = Object.freeze({
  login_ip: { limit: 10, window_seconds: 900 },
  login_account: { limit: 10, window_seconds: 900 },
  signup_ip: { limit: 10, window_seconds: 3600 },
  signup_address: { limit: 3, window_seconds: 3600 },
  password_reset_ip: { limit: 10, window_seconds: 3600 },
  password_reset_address: { limit: 3, window_seconds: 3600 },
  magic_link_ip: { limit: 10, window_seconds: 3600 },
  magic_link_address: { limit: 5, window_seconds: 3600 },
  verification_address: { limit: 3, window_seconds: 600 },
  otp_send_address: { limit: 3, window_seconds: 600 },
  code_verify_ip: { limit: 30, window_seconds: 600 },
  // A known client key is looked up at most once a second per instance; wrong ones every time.
  oauth_client_ip: { limit: 300, window_seconds: 60 },
  // Each authorization request that needs the user writes a row: anonymous writes are bounded.
  oauth_authorize_ip: { limit: 120, window_seconds: 60 },
  // Each registration is a client row (where a workspace allows them at all).
  oauth_register_ip: { limit: 20, window_seconds: 3600 },
  // Failed client authentications at the workspaces' token endpoints, per client address
  // across all workspaces (successes are not counted).
  oauth_client_auth_ip: { limit: 30, window_seconds: 600 },
  // Every per-workspace per-IP limit above also counts here, across all workspaces, so that
  // a client cannot multiply its budget by the number of workspaces it names.
  deployment_ip: { limit: 50, window_seconds: 900 },
  // Public passkey challenges (every sign-in page load asks for one for autofill), counted
  // per client across all workspaces: each is a row until it is swept.
  passkey_challenge_ip: { limit: 300, window_seconds: 600 },
});

/**
 * The embedded database's limits when KEYGATE_RATE_LIMITS is unset: ten times the ones above.
 * Embedded mode is for development (one instance, mail printed to the console), where one
 * person trying curl, a script and the web app from one address would otherwise be locked
 * out within minutes. The start says so in a warning line.
 */
export const developmentRateLimits: RateLimits = Object.freeze(
  Object.fromEntries(
    Object.entries(builtInRateLimits).map(([name, rule]) => [
      name,
      { limit: Math.min(100_000, rule.limit * 10), window_seconds: rule.window_seconds },
    ]),
  ) as RateLimits,
);

/** Limits that only the deployment sets: a workspace's settings cannot raise them. */
const deploymentOnlyLimits = { deployment_ip: true, passkey_challenge_ip: true } as const;

/**
 * A workspace's capability flags, as stored (snake_case, as in the API). Every key is
 * optional in storage; the server defaults fill the gaps.
 */
export const workspaceSettingsSchema = z.object({
  signup: z.boolean(),
  reset_password: z.boolean(),
  password_reset: z.enum(["link", "code"]),
  magic_link: z.boolean(),
  email_verification: z.enum(["off", "code", "link"]),
  require_email_verification: z.boolean(),
  password_min_length: z.number().int().min(8).max(256),
  otp_login: z.enum(["off", "optional", "required"]),
  passwordless_otp: z.boolean(),
  /** Lifetime of emailed one-time codes (OtpService), at most 10 minutes. */
  otp_ttl_seconds: z.number().int().min(60).max(600),
  /** ChangePassword needs a fresh action proof from OtpService (purpose SENSITIVE_ACTION). */
  action_proof_required: z.boolean(),
  access_token_ttl_seconds: z.number().int().min(60).max(86_400),
  refresh_idle_timeout_seconds: z.number().int().min(300).max(31_536_000),
  session_lifetime_seconds: z.number().int().min(300).max(31_536_000),
  /** Factors beyond the password (FactorService): off, optional, or required of every member. */
  mfa: z.enum(["off", "optional", "required"]),
  /** Where mfa is optional: the roles that need a factor (and "mfa" tokens for AdminService). */
  mfa_required_roles: z.array(z.enum(["owner", "admin", "member"])).max(3),
  /** Username-less sign-in with a passkey. */
  passkey_sign_in: z.boolean(),
  /** No password login: passkeys (and emailed codes or links where those are on). */
  passwordless_only: z.boolean(),
  /** RFC 7591 dynamic registration of third-party OAuth clients at /oauth2/register. */
  oauth_dynamic_registration: z.boolean(),
  /** Per-workspace overrides of single rate limits; the rest come from KEYGATE_RATE_LIMITS. */
  rate_limits: rateLimitsSchema.omit(deploymentOnlyLimits).partial().strict().optional(),
});
export type WorkspaceSettings = z.infer<typeof workspaceSettingsSchema>;

export const builtInWorkspaceDefaults: WorkspaceSettings = Object.freeze({
  signup: true,
  reset_password: true,
  password_reset: "link",
  magic_link: true,
  email_verification: "code",
  require_email_verification: false,
  password_min_length: 8,
  otp_login: "off",
  passwordless_otp: false,
  otp_ttl_seconds: 300,
  action_proof_required: false,
  mfa: "optional",
  mfa_required_roles: [],
  passkey_sign_in: true,
  passwordless_only: false,
  oauth_dynamic_registration: false,
  access_token_ttl_seconds: 900,
  refresh_idle_timeout_seconds: 14 * 86_400,
  session_lifetime_seconds: 30 * 86_400,
});
