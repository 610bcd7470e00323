-- RFC 8707 resource indicators and RFC 7591 dynamic registration (docs/openid-provider.md).

-- The resources a code was granted for, and the grant made from it: its access tokens' `aud`.
-- Empty: the workspace's provider itself (userinfo), as before.
ALTER TABLE oauth_codes ADD COLUMN resources text[] NOT NULL DEFAULT '{}';
ALTER TABLE sessions ADD COLUMN resources text[];

-- A client that registered itself at /oauth2/register (only where the workspace allows it):
-- never first-party, always shown to the user as unverified on the consent screen.
ALTER TABLE oauth_clients ADD COLUMN registered_dynamically boolean NOT NULL DEFAULT false;
