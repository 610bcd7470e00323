-- Revoking a signing key (AdminService.RevokeSigningKey): a key that may be compromised leaves
-- the JWKS at once and every token it signed is dead on every instance and verifier within a
-- second, through the revocation feed of migrations/015.
--
-- signing_keys gains the status 'revoked' (never published again, never signs); the trigger
-- below writes a 'signing_key' row to revocations whenever a key becomes revoked, so that the
-- tokens it signed die wherever the feed is followed, whatever their session.

ALTER TABLE signing_keys ADD COLUMN revoked_at timestamptz;

DO $$
DECLARE c record;
BEGIN
  FOR c IN SELECT conname FROM pg_constraint
           WHERE conrelid = 'signing_keys'::regclass AND contype = 'c'
             AND pg_get_constraintdef(oid) LIKE '%''next''%'
  LOOP
    EXECUTE format('ALTER TABLE signing_keys DROP CONSTRAINT %I', c.conname);
  END LOOP;
  -- The checks of migrations/015 name no kind but the four it knew; they are replaced whole.
  FOR c IN SELECT conname FROM pg_constraint
           WHERE conrelid = 'revocations'::regclass AND contype = 'c'
  LOOP
    EXECUTE format('ALTER TABLE revocations DROP CONSTRAINT %I', c.conname);
  END LOOP;
END
$$;

ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_status_known
  CHECK (status IN ('next', 'active', 'retired', 'revoked'));
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_revoked_has_revoked_at
  CHECK ((status = 'revoked') = (revoked_at IS NOT NULL));

-- The key id of a 'signing_key' row: tokens whose header names it are dead, whatever their iat.
ALTER TABLE revocations ADD COLUMN kid text;

ALTER TABLE revocations
  ADD CONSTRAINT revocations_kind_known
    CHECK (kind IN ('session', 'user', 'membership', 'workspace', 'signing_key')),
  ADD CONSTRAINT revocations_session_has_session_id
    CHECK ((kind = 'session') = (session_id IS NOT NULL)),
  ADD CONSTRAINT revocations_signing_key_has_kid
    CHECK ((kind = 'signing_key') = (kid IS NOT NULL)),
  ADD CONSTRAINT revocations_scoped_has_workspace_id
    CHECK (kind IN ('user', 'signing_key') OR workspace_id IS NOT NULL),
  ADD CONSTRAINT revocations_scoped_has_user_id
    CHECK (kind IN ('workspace', 'signing_key') OR user_id IS NOT NULL);

-- The last token a key signed expires by its unpublish time once it is retired (the longest
-- access-token lifetime plus the key-set age after retirement); a key revoked while it is
-- active or next may have signed until now.
CREATE FUNCTION keygate_revoke_signing_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
  IF NEW.status = 'revoked' AND OLD.status IS DISTINCT FROM 'revoked' THEN
    INSERT INTO revocations (kind, kid, cut_off_time, expire_time)
    VALUES ('signing_key', NEW.kid, NEW.revoked_at,
            CASE WHEN OLD.status = 'retired' THEN OLD.unpublish_after
                 ELSE NEW.revoked_at + interval '1 day 1 minute' END);
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER signing_keys_revocation
  AFTER UPDATE OF status ON signing_keys
  FOR EACH ROW EXECUTE FUNCTION keygate_revoke_signing_key();
