-- The audit log is append-only: no role the service uses may change or remove an event, the
-- owner included (a trigger, since privileges do not bind a table's owner). Erasing a user
-- leaves their events, whose user id then stands as a tombstone.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM keygate_tenant;

CREATE FUNCTION keygate_audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only
  BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION keygate_audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate
  BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION keygate_audit_events_append_only();
