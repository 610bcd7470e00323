-- An admin key minted by a signed-in user never has more than that user has: it names the
-- user (keys minted by such a key name the same user), authenticates only while that user is
-- an unblocked, active owner or admin of the key's workspace, and carries the user's current
-- role as its ceiling (an admin's key cannot manage owners). Deleting the user deletes them.
ALTER TABLE admin_keys ADD COLUMN created_by_user_id uuid REFERENCES users (id) ON DELETE CASCADE;

CREATE INDEX admin_keys_created_by_user_id_idx ON admin_keys (created_by_user_id);

-- Existing keys: the user who minted each one, directly or through keys of their own.
WITH RECURSIVE lineage AS (
  SELECT k.id, u.id AS user_id
  FROM admin_keys k JOIN users u ON k.created_by = 'user:' || u.id::text
  UNION
  SELECT k.id, l.user_id
  FROM admin_keys k JOIN lineage l ON k.created_by = 'admin_key:' || l.id::text
)
UPDATE admin_keys k SET created_by_user_id = l.user_id FROM lineage l WHERE k.id = l.id;

-- A key minted by a user who is gone stops working now.
UPDATE admin_keys SET revoked_at = now()
WHERE created_by LIKE 'user:%' AND created_by_user_id IS NULL AND revoked_at IS NULL;

-- Keys of a user's lineage had no bounded lifetime: they get the default maximum (90 days)
-- from now; new ones get KEYGATE_ADMIN_KEY_MAX_LIFETIME_DAYS at most.
UPDATE admin_keys SET expires_at = now() + interval '90 days'
WHERE created_by_user_id IS NOT NULL AND revoked_at IS NULL
  AND (expires_at IS NULL OR expires_at > now() + interval '90 days');
