-- Emailed codes (6 digits) and link tokens (256 bits), for verification, reset, magic links
-- and one-time passwords. Only an HMAC-SHA-256 with the server's token secret is kept: a
-- plain hash of a 6-digit code would fall to a million guesses if the table leaked.
CREATE TABLE one_time_codes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  purpose text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('code', 'link')),
  secret_hash bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
  attempts integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  consumed_at timestamptz,
  invalidated_at timestamptz
);

CREATE UNIQUE INDEX one_time_codes_secret_hash_key ON one_time_codes (secret_hash);
CREATE INDEX one_time_codes_live_idx ON one_time_codes (workspace_id, user_id, purpose)
  WHERE consumed_at IS NULL AND invalidated_at IS NULL;
