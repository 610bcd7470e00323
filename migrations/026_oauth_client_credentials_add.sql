-- Machine clients (docs/openid-provider.md, "Machine clients"): the grant types a client may
-- use, its one token endpoint authentication method, the public keys of a private_key_jwt
-- client, and what ends the access tokens it gets with client_credentials.

ALTER TABLE oauth_clients
  ADD COLUMN grant_types text[] NOT NULL DEFAULT '{authorization_code,refresh_token}',
  -- Exactly one per client (RFC 7591 section 2): a client registered for one method is
  -- refused with any other, so a leaked secret of a private_key_jwt client cannot exist.
  ADD COLUMN token_endpoint_auth_method text,
  -- RFC 7517 JWK Set of a private_key_jwt client: public signing keys only.
  ADD COLUMN jwks jsonb,
  -- A client_credentials token is no session (it has no user), but it carries this id as its
  -- sid, so a 'session' revocation of it ends every such token of the client at once on every
  -- instance and in every verifier, through the revocation feed as it is. A new secret gets a
  -- new id; deleting the client or rotating its secret revokes the old one (trigger below).
  ADD COLUMN machine_session_id uuid NOT NULL DEFAULT gen_random_uuid(),
  -- The latest exp of those tokens (rounded up to the minute); null while there are none.
  ADD COLUMN machine_access_expires_at timestamptz;

-- Clients from before could send their secret either way; they keep the way RFC 7591 makes
-- the default. One that posts its secret must be registered again with client_secret_post.
UPDATE oauth_clients
SET token_endpoint_auth_method = CASE WHEN secret_hash IS NULL THEN 'none' ELSE 'client_secret_basic' END;

-- Instances of the previous version, during a rolling upgrade, insert without a method.
CREATE FUNCTION keygate_oauth_client_default_method() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF NEW.token_endpoint_auth_method IS NULL THEN
    NEW.token_endpoint_auth_method :=
      CASE WHEN NEW.secret_hash IS NULL THEN 'none' ELSE 'client_secret_basic' END;
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER oauth_clients_default_method
  BEFORE INSERT ON oauth_clients
  FOR EACH ROW EXECUTE FUNCTION keygate_oauth_client_default_method();

ALTER TABLE oauth_clients
  ALTER COLUMN token_endpoint_auth_method SET NOT NULL,
  ADD CONSTRAINT oauth_clients_method_known CHECK (token_endpoint_auth_method IN
    ('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none')),
  ADD CONSTRAINT oauth_clients_secret_for_secret_methods CHECK ((secret_hash IS NOT NULL) =
    (token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post'))),
  ADD CONSTRAINT oauth_clients_jwks_for_private_key_jwt CHECK ((jwks IS NOT NULL) =
    (token_endpoint_auth_method = 'private_key_jwt')),
  ADD CONSTRAINT oauth_clients_grant_types_known CHECK (grant_types <@
    ARRAY['authorization_code', 'refresh_token', 'client_credentials']::text[]),
  ADD CONSTRAINT oauth_clients_public_no_client_credentials CHECK (
    token_endpoint_auth_method <> 'none' OR NOT ('client_credentials' = ANY (grant_types)));

-- The revocation of a client's machine tokens is a 'session' row without a user.
ALTER TABLE revocations DROP CONSTRAINT revocations_scoped_has_user_id;
ALTER TABLE revocations ADD CONSTRAINT revocations_scoped_has_user_id
  CHECK (kind IN ('workspace', 'signing_key', 'session') OR user_id IS NOT NULL);

-- Deleting a client (or its workspace) or giving it a new machine_session_id (a new secret)
-- ends the tokens it got with client_credentials, whichever path did it. The row lives until
-- the last of them expires (by the service's clock, as they were issued).
CREATE FUNCTION keygate_revoke_machine_tokens() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  IF OLD.machine_access_expires_at IS NOT NULL THEN
    INSERT INTO revocations (kind, workspace_id, session_id, cut_off_time, expire_time)
    VALUES ('session', OLD.workspace_id, OLD.machine_session_id, now(),
            OLD.machine_access_expires_at);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER oauth_clients_revoke_machine_tokens_on_delete
  AFTER DELETE ON oauth_clients
  FOR EACH ROW EXECUTE FUNCTION keygate_revoke_machine_tokens();

CREATE TRIGGER oauth_clients_revoke_machine_tokens_on_rotation
  AFTER UPDATE OF machine_session_id ON oauth_clients
  FOR EACH ROW WHEN (OLD.machine_session_id IS DISTINCT FROM NEW.machine_session_id)
  EXECUTE FUNCTION keygate_revoke_machine_tokens();

-- The jti of every private_key_jwt assertion accepted, until its exp: an assertion works once
-- (RFC 7523 section 3, OpenID Connect Core 9).
CREATE TABLE oauth_client_assertions (
  workspace_id uuid NOT NULL,
  client_id text NOT NULL,
  jti text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (workspace_id, client_id, jti),
  FOREIGN KEY (workspace_id, client_id) REFERENCES oauth_clients (workspace_id, client_id) ON DELETE CASCADE
);

ALTER TABLE oauth_client_assertions ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_client_assertions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oauth_client_assertions TO keygate_tenant
  USING (workspace_id = NULLIF(current_setting('keygate.workspace_id', true), '')::uuid)
  WITH CHECK (workspace_id = NULLIF(current_setting('keygate.workspace_id', true), '')::uuid);
CREATE POLICY service_access ON oauth_client_assertions TO CURRENT_USER USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON oauth_client_assertions TO keygate_tenant;
