-- A workspace's own view of a shared account (SECURITY.md 29, 30).

-- Metadata belongs to the membership: each workspace reads and writes only its own. Existing
-- objects were one shared object that every workspace of the account saw, so each membership
-- starts with a copy of it. users.metadata stays as the account's own, written only by a
-- deployment admin.
ALTER TABLE workspace_members ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
UPDATE workspace_members m SET metadata = u.metadata
FROM users u
WHERE u.id = m.user_id AND u.metadata <> '{}'::jsonb;

-- A workspace that adds an existing account invites it: the membership is 'invited' until the
-- owner accepts through the emailed link, and until then opens nothing.
ALTER TABLE workspace_members DROP CONSTRAINT workspace_members_status_check;
ALTER TABLE workspace_members ADD CONSTRAINT workspace_members_status_check
  CHECK (status IN ('active', 'disabled', 'invited'));
