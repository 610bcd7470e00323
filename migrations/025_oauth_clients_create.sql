-- The OpenID Provider (docs/openid-provider.md): OAuth clients of a workspace, the
-- authorization requests waiting for a sign-in, and the codes they end in. Every grant is a
-- session: a row in `sessions` with the client that holds it, so every path that ends
-- sessions (logout, block, removal, reset, RevokeSession, key revocation) ends grants too.

-- ID tokens are signed RS256 by default (OpenID Connect Core 15.1), whatever algorithm signs
-- access tokens: each purpose has its own active key, rotated on its own.
ALTER TABLE signing_keys ADD COLUMN purpose text NOT NULL DEFAULT 'access'
  CHECK (purpose IN ('access', 'id_token'));
DROP INDEX signing_keys_one_active_key;
CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys (purpose) WHERE status = 'active';

CREATE TABLE oauth_clients (
  workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  client_id text NOT NULL,
  name text NOT NULL,
  -- HMAC-SHA-256 of the secret with the token secret; null for a public client (PKCE only).
  secret_hash bytea CHECK (octet_length(secret_hash) = 32),
  -- Matched exactly, as strings (RFC 9700 section 2.1).
  redirect_uris text[] NOT NULL,
  post_logout_redirect_uris text[] NOT NULL DEFAULT '{}',
  -- First-party clients skip the consent screen.
  first_party boolean NOT NULL DEFAULT false,
  scopes text[] NOT NULL,
  -- OpenID Connect Back-Channel Logout: where a logout token goes when a grant ends.
  backchannel_logout_uri text,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (workspace_id, client_id)
);

-- An authorization request between /oauth2/authorize and its answer: what the client asked
-- for, the browser that asked (a keyed hash of a cookie), and once the user has signed in,
-- their session.
CREATE TABLE oauth_interactions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL,
  client_id text NOT NULL,
  request jsonb NOT NULL,
  browser_hash bytea NOT NULL CHECK (octet_length(browser_hash) = 32),
  session_id uuid REFERENCES sessions (id) ON DELETE CASCADE,
  -- Keyed hash of the secret handed to whoever answered (in its redirect_to): the browser
  -- that comes back must hold both the cookie that made the request and this.
  answer_hash bytea CHECK (octet_length(answer_hash) = 32),
  -- accepted or rejected by the interaction RPCs, then completed once the browser returns.
  outcome text CHECK (outcome IN ('accepted', 'rejected')),
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  completed_at timestamptz,
  FOREIGN KEY (workspace_id, client_id) REFERENCES oauth_clients (workspace_id, client_id) ON DELETE CASCADE
);

-- Authorization codes (RFC 6749 section 4.1.2): single use, short-lived, kept as keyed
-- hashes. The grant's session is made when the code is exchanged; a second exchange ends it.
CREATE TABLE oauth_codes (
  code_hash bytea PRIMARY KEY CHECK (octet_length(code_hash) = 32),
  workspace_id uuid NOT NULL,
  client_id text NOT NULL,
  -- The browser's session the grant hangs from: ending it ends the grant.
  parent_session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  redirect_uri text NOT NULL,
  scopes text[] NOT NULL,
  nonce text,
  code_challenge text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  grant_session_id uuid REFERENCES sessions (id) ON DELETE SET NULL,
  FOREIGN KEY (workspace_id, client_id) REFERENCES oauth_clients (workspace_id, client_id) ON DELETE CASCADE
);

-- A grant's session names its client, the browser session it came from, the scopes granted,
-- and when the user last proved who they are (OpenID Connect auth_time).
ALTER TABLE sessions ADD COLUMN client_id text;
ALTER TABLE sessions ADD COLUMN scopes text[];
ALTER TABLE sessions ADD COLUMN parent_session_id uuid REFERENCES sessions (id) ON DELETE CASCADE;
ALTER TABLE sessions ADD COLUMN auth_time timestamptz;
ALTER TABLE sessions ADD CONSTRAINT sessions_client_fkey
  FOREIGN KEY (workspace_id, client_id) REFERENCES oauth_clients (workspace_id, client_id) ON DELETE CASCADE;
CREATE INDEX sessions_parent_session_idx ON sessions (parent_session_id) WHERE parent_session_id IS NOT NULL;
CREATE INDEX sessions_client_idx ON sessions (workspace_id, client_id) WHERE client_id IS NOT NULL;

-- Ending a session ends the grants made from it, whichever path ended it; each grant's own
-- revocation row follows from the sessions_revocation trigger.
CREATE FUNCTION keygate_end_child_sessions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  UPDATE sessions SET revoked_at = NEW.revoked_at, revoke_reason = 'parent_session_ended'
  WHERE parent_session_id = NEW.id AND revoked_at IS NULL;
  RETURN NEW;
END
$$;

CREATE TRIGGER sessions_end_children
  AFTER UPDATE OF revoked_at ON sessions
  FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
  EXECUTE FUNCTION keygate_end_child_sessions();

-- Logout tokens owed to clients (OpenID Connect Back-Channel Logout 1.0): one row per ended
-- grant whose client listens, written by the trigger below whichever path ended it, and sent
-- by whichever instance claims it first.
CREATE TABLE oauth_logouts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL,
  client_id text NOT NULL,
  session_id uuid NOT NULL,
  user_id uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz,
  abandoned_at timestamptz,
  last_error text,
  FOREIGN KEY (workspace_id, client_id) REFERENCES oauth_clients (workspace_id, client_id) ON DELETE CASCADE
);
CREATE INDEX oauth_logouts_due_idx ON oauth_logouts (next_attempt_at)
  WHERE delivered_at IS NULL AND abandoned_at IS NULL;

CREATE FUNCTION keygate_owe_logout() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  INSERT INTO oauth_logouts (workspace_id, client_id, session_id, user_id)
  SELECT NEW.workspace_id, NEW.client_id, NEW.id, NEW.user_id
  FROM oauth_clients c
  WHERE c.workspace_id = NEW.workspace_id AND c.client_id = NEW.client_id
    AND c.backchannel_logout_uri IS NOT NULL;
  RETURN NEW;
END
$$;

CREATE TRIGGER sessions_owe_logout
  AFTER UPDATE OF revoked_at ON sessions
  FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL AND NEW.client_id IS NOT NULL)
  EXECUTE FUNCTION keygate_owe_logout();

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['oauth_clients', 'oauth_interactions', 'oauth_codes', 'oauth_logouts']
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
