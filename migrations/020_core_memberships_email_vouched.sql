-- A workspace's own word that a member's address is theirs: ProvisionUser's email_verified or
-- MarkEmailVerified from a caller scoped to that workspace. It satisfies that workspace's
-- require_email_verification and nothing else; the account's users.email_verified changes only
-- by the owner's proof (a code or link that reached the mailbox) or a deployment admin, so one
-- workspace cannot vouch for an address in another.
ALTER TABLE workspace_members ADD COLUMN email_verified boolean NOT NULL DEFAULT false;

-- Mail goes to the address in its compatibility-normalised form (NFKC, as uniqueness already
-- uses), so a look-alike spelling registered first (fullwidth letters, say) cannot make mail
-- for the real address go elsewhere.
UPDATE users SET email = normalize(email, NFKC) WHERE email <> normalize(email, NFKC);
