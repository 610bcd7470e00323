-- Revocations: what makes access tokens dead before their exp. Every instance keeps the ones
-- that can still matter in memory (src/domain/revocations.ts) and follows this table through
-- LISTEN/NOTIFY and a periodic resync; WatchRevocations streams it.
--
-- Triggers write the rows, so every code path that ends a session, blocks a user, changes a
-- membership or deletes a workspace is covered, cascades included:
-- - session: a session ended (revoked_at set) or was deleted while live; all its access
--   tokens are dead;
-- - user: users.tokens_valid_after moved (block, password reset); the user's tokens issued at
--   or before the cut-off are dead;
-- - membership: workspace_members.tokens_valid_after moved (role change, disable) or the
--   membership was removed; the user's tokens in that workspace issued at or before it are dead;
-- - workspace: the workspace was deleted; all its tokens are dead, whatever their iat.
-- expire_time is when the last access token the row concerns expires; after it the row says
-- nothing any more. Sessions record that time, as access tokens are issued for them.
--
-- The cursor orders rows by commit: it is assigned at commit time (a deferred trigger) under a
-- transaction-scoped advisory lock held until the commit, so a reader that has seen cursor N
-- never later meets a row with a smaller cursor. "cursor > last seen" then misses nothing.
ALTER TABLE sessions ADD COLUMN access_expires_at timestamptz;

CREATE TABLE revocations (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- Null until the inserting transaction commits.
  cursor bigint UNIQUE,
  kind text NOT NULL CHECK (kind IN ('session', 'user', 'membership', 'workspace')),
  workspace_id uuid,
  user_id uuid,
  session_id uuid,
  cut_off_time timestamptz NOT NULL,
  expire_time timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'session') = (session_id IS NOT NULL)),
  CHECK (kind = 'user' OR workspace_id IS NOT NULL),
  CHECK (kind = 'workspace' OR user_id IS NOT NULL)
);

CREATE INDEX revocations_expire_time_idx ON revocations (expire_time);

CREATE SEQUENCE revocations_cursor_seq;

-- Only the service reads the feed (across workspaces, like the mail sender); tenant-scoped
-- transactions never see or write it. The triggers run as the owner.
REVOKE ALL ON revocations FROM keygate_tenant;
REVOKE ALL ON SEQUENCE revocations_cursor_seq FROM keygate_tenant;
ALTER TABLE revocations ENABLE ROW LEVEL SECURITY;
ALTER TABLE revocations FORCE ROW LEVEL SECURITY;
CREATE POLICY service_access ON revocations TO CURRENT_USER USING (true) WITH CHECK (true);

-- Assigns the cursor at commit and wakes the listeners (one notification per transaction:
-- identical payloads are folded).
CREATE FUNCTION keygate_revocations_order() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(7739457062416457061);
  UPDATE revocations SET cursor = nextval('revocations_cursor_seq') WHERE id = NEW.id;
  PERFORM pg_notify('keygate_revocations', '');
  RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER revocations_order
  AFTER INSERT ON revocations DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION keygate_revocations_order();

-- The latest access-token expiry among the given sessions, for rows about many sessions;
-- sessions from before access_expires_at existed count with the longest access-token lifetime.
CREATE FUNCTION keygate_access_expiry(p_workspace_id uuid, p_user_id uuid, p_floor timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
AS $$
  SELECT greatest(p_floor, max(coalesce(s.access_expires_at, s.last_used_at + interval '1 day 1 minute')))
  FROM sessions s
  WHERE (p_workspace_id IS NULL OR s.workspace_id = p_workspace_id)
    AND (p_user_id IS NULL OR s.user_id = p_user_id)
$$;

CREATE FUNCTION keygate_revoke_session() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
      INSERT INTO revocations (kind, workspace_id, user_id, session_id, cut_off_time, expire_time)
      VALUES ('session', NEW.workspace_id, NEW.user_id, NEW.id, NEW.revoked_at,
              coalesce(NEW.access_expires_at, NEW.last_used_at + interval '1 day 1 minute'));
    END IF;
    RETURN NEW;
  END IF;
  IF OLD.revoked_at IS NULL THEN
    INSERT INTO revocations (kind, workspace_id, user_id, session_id, cut_off_time, expire_time)
    VALUES ('session', OLD.workspace_id, OLD.user_id, OLD.id, now(),
            coalesce(OLD.access_expires_at, OLD.last_used_at + interval '1 day 1 minute'));
  END IF;
  RETURN OLD;
END
$$;

CREATE TRIGGER sessions_revocation
  AFTER UPDATE OF revoked_at OR DELETE ON sessions
  FOR EACH ROW EXECUTE FUNCTION keygate_revoke_session();

CREATE FUNCTION keygate_revoke_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  IF NEW.tokens_valid_after IS NOT NULL
     AND NEW.tokens_valid_after IS DISTINCT FROM OLD.tokens_valid_after THEN
    INSERT INTO revocations (kind, user_id, cut_off_time, expire_time)
    VALUES ('user', NEW.id, NEW.tokens_valid_after,
            keygate_access_expiry(NULL, NEW.id, NEW.tokens_valid_after));
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER users_revocation
  AFTER UPDATE OF tokens_valid_after ON users
  FOR EACH ROW EXECUTE FUNCTION keygate_revoke_user();

CREATE FUNCTION keygate_revoke_membership() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.tokens_valid_after IS NOT NULL
       AND NEW.tokens_valid_after IS DISTINCT FROM OLD.tokens_valid_after THEN
      INSERT INTO revocations (kind, workspace_id, user_id, cut_off_time, expire_time)
      VALUES ('membership', NEW.workspace_id, NEW.user_id, NEW.tokens_valid_after,
              keygate_access_expiry(NEW.workspace_id, NEW.user_id, NEW.tokens_valid_after));
    END IF;
    RETURN NEW;
  END IF;
  -- A removal that is part of deleting the workspace is covered by the workspace row.
  IF EXISTS (SELECT 1 FROM workspaces WHERE id = OLD.workspace_id) THEN
    INSERT INTO revocations (kind, workspace_id, user_id, cut_off_time, expire_time)
    VALUES ('membership', OLD.workspace_id, OLD.user_id, now(),
            keygate_access_expiry(OLD.workspace_id, OLD.user_id, now()));
  END IF;
  RETURN OLD;
END
$$;

CREATE TRIGGER workspace_members_revocation
  AFTER UPDATE OF tokens_valid_after OR DELETE ON workspace_members
  FOR EACH ROW EXECUTE FUNCTION keygate_revoke_membership();

-- Before the delete, while the workspace's sessions still tell how long its tokens live.
CREATE FUNCTION keygate_revoke_workspace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  INSERT INTO revocations (kind, workspace_id, cut_off_time, expire_time)
  VALUES ('workspace', OLD.id, now(), keygate_access_expiry(OLD.id, NULL, now()));
  RETURN OLD;
END
$$;

CREATE TRIGGER workspaces_revocation
  BEFORE DELETE ON workspaces
  FOR EACH ROW EXECUTE FUNCTION keygate_revoke_workspace();
