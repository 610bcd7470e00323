-- Row-level security, the second wall behind the workspace predicate every query carries
-- (SECURITY.md 20). Tenant-scoped transactions run as keygate_tenant (SET LOCAL ROLE in
-- src/db/with-tenant.ts), a role that is neither owner, superuser nor BYPASSRLS, and see
-- only the rows of the workspace in the transaction-local setting keygate.workspace_id.
-- The role that runs migrations, which is also the role the service connects as, keeps a
-- policy of its own for the few deliberate cross-tenant paths (refresh-token and link
-- lookups by hash, the mail sender, a user's own workspace list).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keygate_tenant') THEN
    CREATE ROLE keygate_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
  END IF;
END
$$;

GRANT keygate_tenant TO CURRENT_USER;

DO $$
DECLARE
  schema_name text := current_schema();
  t text;
BEGIN
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO keygate_tenant', schema_name);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO keygate_tenant', schema_name);
  EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO keygate_tenant', schema_name);
  EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO keygate_tenant', schema_name);
  EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO keygate_tenant', schema_name);

  FOREACH t IN ARRAY ARRAY['workspace_members', 'sessions', 'refresh_tokens', 'one_time_codes',
                           'audit_events', 'mail_outbox', 'admin_keys']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON %I TO keygate_tenant '
      'USING (workspace_id = NULLIF(current_setting(''keygate.workspace_id'', true), '''')::uuid) '
      'WITH CHECK (workspace_id = NULLIF(current_setting(''keygate.workspace_id'', true), '''')::uuid)', t);
    EXECUTE format('CREATE POLICY service_access ON %I TO CURRENT_USER USING (true) WITH CHECK (true)', t);
  END LOOP;

  ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
  ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
  CREATE POLICY tenant_isolation ON workspaces TO keygate_tenant
    USING (id = NULLIF(current_setting('keygate.workspace_id', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('keygate.workspace_id', true), '')::uuid);
  CREATE POLICY service_access ON workspaces TO CURRENT_USER USING (true) WITH CHECK (true);
END
$$;
