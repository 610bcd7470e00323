-- How a session was signed in (RFC 8176 amr values: pwd, otp, hwk, swk, email, mfa), carried
-- into its access tokens at every refresh. Sessions from before this migration say nothing.
ALTER TABLE sessions ADD COLUMN amr text[] NOT NULL DEFAULT '{}';

-- What a pending login has proven so far (the password: pwd), and whether it waits for the
-- member to set up a first factor (FactorService enrollment) rather than to use one.
ALTER TABLE pending_logins ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}';
ALTER TABLE pending_logins ADD COLUMN enrollment boolean NOT NULL DEFAULT false;
