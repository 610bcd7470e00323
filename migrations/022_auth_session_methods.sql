-- How a session was signed in (RFC 8176 amr values: pwd, otp, hwk, swk, email, mfa), carried
-- into its access tokens at every refresh. Sessions from before this migration say nothing.
ALTER TABLE sessions ADD COLUMN amr text[] NOT NULL DEFAULT '{}';

-- What a pending login has proven so far (the password: pwd), and what finishes it: the
-- emailed code, a factor of the membership, or setting up a first one (FactorService).
ALTER TABLE pending_logins ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}';
ALTER TABLE pending_logins ADD COLUMN step text NOT NULL DEFAULT 'email'
  CHECK (step IN ('email', 'factor', 'enroll'));
