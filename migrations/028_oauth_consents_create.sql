-- Consent remembered (docs/openid-provider.md, "Clients"): what a member allowed a
-- third-party client, so that a later request for no more than that does not ask again, and
-- one for more (a new scope or resource) does. Revoking the grant forgets it.
--
-- Keyed by the membership, not the account: removing the member (or deleting the account or
-- the workspace) forgets what they consented to there, and an account re-added later is asked
-- afresh. Deleting the client forgets it too.
CREATE TABLE oauth_consents (
  workspace_id uuid NOT NULL,
  user_id uuid NOT NULL,
  client_id text NOT NULL,
  -- The union of everything accepted so far; a request is covered when it asks for a subset.
  scopes text[] NOT NULL,
  -- RFC 8707 resources, likewise; a request naming none is for the provider itself.
  resources text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (workspace_id, user_id, client_id),
  FOREIGN KEY (workspace_id, user_id) REFERENCES workspace_members (workspace_id, user_id) ON DELETE CASCADE,
  FOREIGN KEY (workspace_id, client_id) REFERENCES oauth_clients (workspace_id, client_id) ON DELETE CASCADE
);
-- The client's side of the cascade.
CREATE INDEX oauth_consents_client_idx ON oauth_consents (workspace_id, client_id);

ALTER TABLE oauth_consents ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_consents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oauth_consents TO keygate_tenant
  USING (workspace_id = NULLIF(current_setting('keygate.workspace_id', true), '')::uuid)
  WITH CHECK (workspace_id = NULLIF(current_setting('keygate.workspace_id', true), '')::uuid);
CREATE POLICY service_access ON oauth_consents TO CURRENT_USER USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON oauth_consents TO keygate_tenant;
