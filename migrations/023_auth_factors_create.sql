-- Factors beyond the password (FactorService). Each belongs to a membership: removing the
-- member removes them, and row-level security keeps each workspace to its own (SECURITY.md
-- 20, 39-41).

-- An authenticator app (TOTP, RFC 6238): at most one per membership. Unconfirmed until a
-- first code checks out; an unconfirmed enrollment expires.
CREATE TABLE totp_factors (
  workspace_id uuid NOT NULL,
  user_id uuid NOT NULL,
  -- The shared secret, sealed with a key derived from KEYGATE_KEY_ENCRYPTION_KEY and bound to
  -- the membership: never stored or answered in the clear after enrollment.
  secret_sealed bytea NOT NULL,
  created_at timestamptz NOT NULL,
  confirmed_at timestamptz,
  enrollment_expires_at timestamptz,
  -- The time step of the last accepted code: a code (or an earlier one) never works twice.
  last_used_step bigint,
  PRIMARY KEY (workspace_id, user_id),
  FOREIGN KEY (workspace_id, user_id) REFERENCES workspace_members (workspace_id, user_id) ON DELETE CASCADE
);

-- Single-use recovery codes, stored as keyed hashes (HMAC with the token secret).
CREATE TABLE recovery_codes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL,
  user_id uuid NOT NULL,
  code_hash bytea NOT NULL CHECK (octet_length(code_hash) = 32),
  created_at timestamptz NOT NULL,
  used_at timestamptz,
  FOREIGN KEY (workspace_id, user_id) REFERENCES workspace_members (workspace_id, user_id) ON DELETE CASCADE,
  CONSTRAINT recovery_codes_code_hash_key UNIQUE (workspace_id, user_id, code_hash)
);

-- WebAuthn credentials. credential_id is unique within a workspace: the same authenticator
-- can hold a passkey for each workspace, each with its own user handle.
CREATE TABLE passkeys (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL,
  user_id uuid NOT NULL,
  credential_id bytea NOT NULL,
  public_key bytea NOT NULL,
  sign_count bigint NOT NULL DEFAULT 0,
  transports text[] NOT NULL DEFAULT '{}',
  backed_up boolean NOT NULL DEFAULT false,
  device_type text NOT NULL DEFAULT 'singleDevice',
  name text NOT NULL,
  created_at timestamptz NOT NULL,
  last_used_at timestamptz,
  FOREIGN KEY (workspace_id, user_id) REFERENCES workspace_members (workspace_id, user_id) ON DELETE CASCADE,
  CONSTRAINT passkeys_credential_id_key UNIQUE (workspace_id, credential_id)
);

CREATE INDEX passkeys_member_idx ON passkeys (workspace_id, user_id);

-- The WebAuthn user handle of a membership: random, so that workspaces sharing an account
-- cannot link their passkeys to each other, or to the account's id.
ALTER TABLE workspace_members ADD COLUMN passkey_user_handle bytea;
CREATE UNIQUE INDEX workspace_members_passkey_user_handle_key
  ON workspace_members (workspace_id, passkey_user_handle) WHERE passkey_user_handle IS NOT NULL;

-- WebAuthn challenges, single use and short-lived, looked up by their hash when the answer
-- comes back (on any instance).
CREATE TABLE passkey_challenges (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  -- Null for a username-less sign-in: nobody is named until the assertion is.
  user_id uuid REFERENCES users (id) ON DELETE CASCADE,
  pending_login_id uuid REFERENCES pending_logins (id) ON DELETE CASCADE,
  purpose text NOT NULL CHECK (purpose IN ('registration', 'sign_in', 'second_step', 'sensitive_action')),
  challenge_hash bytea NOT NULL CHECK (octet_length(challenge_hash) = 32),
  user_verification text NOT NULL DEFAULT 'preferred',
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  consumed_at timestamptz,
  CONSTRAINT passkey_challenges_challenge_hash_key UNIQUE (challenge_hash)
);

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['totp_factors', 'recovery_codes', 'passkeys', 'passkey_challenges']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON %I TO keygate_tenant '
      'USING (workspace_id = NULLIF(current_setting(''keygate.workspace_id'', true), '''')::uuid) '
      'WITH CHECK (workspace_id = NULLIF(current_setting(''keygate.workspace_id'', true), '''')::uuid)', t);
    EXECUTE format('CREATE POLICY service_access ON %I TO CURRENT_USER USING (true) WITH CHECK (true)', t);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO keygate_tenant', t);
  END LOOP;
END
$$;
