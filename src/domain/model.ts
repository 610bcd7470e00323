/**
 * What the flows answer about, under the names the layers above use: workspaces, users,
 * memberships and their roles, sessions, passkeys, keys, revocations and audit events. Each is
 * today the row its repository reads; handlers and the HTTP endpoints import them from here,
 * never from a repository (test/layers.test.ts holds that), so a table can change behind them.
 */
export type { AdminKeyRow } from "../repositories/admin-keys.js";
export type { AdminUserRow } from "../repositories/admin-users.js";
export type { AuditEventRow } from "../repositories/admin-workspaces.js";
export type { GrantRow } from "../repositories/grants.js";
export type { MembershipRow, Role } from "../repositories/memberships.js";
export type { OAuthClientRow } from "../repositories/oauth-clients.js";
export type { PasskeyRow } from "../repositories/passkeys.js";
export type { RevocationRow } from "../repositories/revocations.js";
export type { SessionRow } from "../repositories/sessions.js";
export type { SigningKeyInfoRow } from "../repositories/signing-keys.js";
export type { UserRow } from "../repositories/users.js";
export type { WorkspaceRow } from "../repositories/workspaces.js";
