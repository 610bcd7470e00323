-- The audit log. No foreign keys: events outlive the users and workspaces they name (a
-- deleted user's id stays as a tombstone). Never holds a secret.
CREATE TABLE audit_events (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid,
  type text NOT NULL,
  user_id uuid,
  session_id uuid,
  actor text,
  ip_address text,
  user_agent text,
  outcome text NOT NULL CHECK (outcome IN ('success', 'failure')),
  details jsonb NOT NULL DEFAULT '{}',
  request_id text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_events_workspace_created_idx ON audit_events (workspace_id, created_at DESC);
CREATE INDEX audit_events_user_created_idx ON audit_events (user_id, created_at DESC);
