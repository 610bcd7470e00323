-- A password login waiting for its emailed second step (OtpService.VerifyOtp completes it).
CREATE TABLE pending_logins (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  ip_address text,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  completed_at timestamptz
);

CREATE INDEX pending_logins_user_idx ON pending_logins (workspace_id, user_id);

ALTER TABLE pending_logins ENABLE ROW LEVEL SECURITY;
ALTER TABLE pending_logins FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON pending_logins TO keygate_tenant
  USING (workspace_id = NULLIF(current_setting('keygate.workspace_id', true), '')::uuid)
  WITH CHECK (workspace_id = NULLIF(current_setting('keygate.workspace_id', true), '')::uuid);
CREATE POLICY service_access ON pending_logins TO CURRENT_USER USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON pending_logins TO keygate_tenant;

-- Users who chose a second login step where the workspace makes it optional.
ALTER TABLE users ADD COLUMN otp_login_opt_in boolean NOT NULL DEFAULT false;
