-- Keys for internal callers of AdminService and TokenIntrospectionService. Only a SHA-256
-- of the key is kept: keys carry 256 random bits, so a fast hash is enough to make a leaked
-- table useless, and it keeps every admin call's key check cheap.
CREATE TABLE admin_keys (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- NULL for a deployment-wide key.
  workspace_id uuid REFERENCES workspaces (id) ON DELETE CASCADE,
  name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
  -- The visible start of the key ("kg_" and 8 characters), unique so lookups use it.
  prefix text NOT NULL,
  secret_hash bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
  role text NOT NULL CHECK (role IN ('read_only', 'admin')),
  introspect boolean NOT NULL DEFAULT false,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  expires_at timestamptz,
  revoked_at timestamptz,
  CONSTRAINT admin_keys_prefix_key UNIQUE (prefix)
);

CREATE INDEX admin_keys_workspace_id_idx ON admin_keys (workspace_id);
