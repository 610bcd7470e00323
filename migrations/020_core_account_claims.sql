-- A workspace's own word that a member's address is theirs: ProvisionUser's email_verified or
-- MarkEmailVerified from a caller scoped to that workspace. It satisfies that workspace's
-- require_email_verification and nothing else; the account's users.email_verified changes only
-- by the owner's proof (a code or link that reached the mailbox) or a deployment admin, so one
-- workspace cannot vouch for an address in another.
ALTER TABLE workspace_members ADD COLUMN email_verified boolean NOT NULL DEFAULT false;

-- When the account's current password was set by someone who showed they read the mailbox
-- (AcceptInvitation, ResetPassword) or vouched for by a deployment admin. A password chosen at
-- SignUp, or by a workspace that provisioned the account, is not proven.
ALTER TABLE users ADD COLUMN password_proven_at timestamptz;

-- Set when a workspace adds an account that already existed and whose password was not proven
-- (SECURITY.md 28): that password, and sessions from before, open this workspace only once the
-- owner proves the address and sets a password after this instant (the invitation, a reset).
-- The account itself is left as it is, so no workspace can take or wipe another's account.
ALTER TABLE workspace_members ADD COLUMN claimed_at timestamptz;

-- Mail goes to the address in its compatibility-normalised form (NFKC, as uniqueness already
-- uses), so a look-alike spelling registered first (fullwidth letters, say) cannot make mail
-- for the real address go elsewhere.
UPDATE users SET email = normalize(email, NFKC) WHERE email <> normalize(email, NFKC);
