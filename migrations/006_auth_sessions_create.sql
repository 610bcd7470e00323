-- A session is one login of one user in one workspace; its refresh tokens form a chain in
-- which each token has at most one successor.
CREATE TABLE sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  ip_address text,
  user_agent text,
  created_at timestamptz NOT NULL,
  last_used_at timestamptz NOT NULL,
  -- The refresh chain dies when unused until idle_expires_at, and at expires_at at the latest.
  idle_expires_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  revoke_reason text
);

CREATE INDEX sessions_workspace_user_idx ON sessions (workspace_id, user_id, created_at DESC);

CREATE TABLE refresh_tokens (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  -- HMAC-SHA-256 of the token with the server's token secret; the token itself is never kept.
  token_hash bytea NOT NULL CHECK (octet_length(token_hash) = 32),
  parent_id uuid REFERENCES refresh_tokens (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  -- Set when this token was exchanged for its successor.
  rotated_at timestamptz,
  CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash),
  -- At most one successor per token, whatever the concurrency.
  CONSTRAINT refresh_tokens_parent_id_key UNIQUE (parent_id)
);

CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
