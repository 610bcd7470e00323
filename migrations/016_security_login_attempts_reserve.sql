-- A login attempt is counted before its password is checked, in one statement under the
-- row's lock, so that N concurrent guesses get at most the threshold of real password checks
-- however they are spread over workspaces and instances. A success then deletes the row.
--
-- The subject is the case-folded address for attempts at a workspace where the address has
-- an active membership (the account's own count, deployment-wide), and
-- "<workspace id>:<address>" for the others, so that guessing at a workspace the account is
-- not in neither checks its password nor locks it out elsewhere.
COMMENT ON COLUMN login_failures.email_normalized IS
  'The subject of the count: a case-folded address, or <workspace id>:<address>';

-- Answers whether the attempt may go on to the password check and, when the subject is
-- locked, in how many milliseconds the lock ends. A refused attempt is not counted, so
-- attempts during a lockout do not extend it. The attempt that reaches the threshold starts
-- the lockout (each one in a row twice as long, up to p_max_seconds) and is still allowed.
CREATE FUNCTION keygate_login_attempt(p_subject text, p_threshold integer, p_base_seconds integer,
                                      p_max_seconds integer, p_now timestamptz)
RETURNS TABLE (allowed boolean, retry_after_ms bigint)
LANGUAGE plpgsql
AS $$
DECLARE
  v login_failures%ROWTYPE;
BEGIN
  INSERT INTO login_failures (email_normalized, updated_at) VALUES (p_subject, p_now)
  ON CONFLICT (email_normalized) DO NOTHING;
  SELECT * INTO v FROM login_failures f WHERE f.email_normalized = p_subject FOR UPDATE;
  IF v.locked_until IS NOT NULL AND v.locked_until > p_now THEN
    RETURN QUERY SELECT false,
      GREATEST(1, ceil(extract(epoch FROM (v.locked_until - p_now)) * 1000))::bigint;
    RETURN;
  END IF;
  IF v.failed_count + 1 >= p_threshold THEN
    UPDATE login_failures SET failed_count = 0, lockouts = v.lockouts + 1,
      locked_until = p_now + make_interval(secs => least(p_max_seconds, p_base_seconds * power(2, least(v.lockouts, 30)))),
      updated_at = p_now
    WHERE email_normalized = p_subject;
  ELSE
    UPDATE login_failures SET failed_count = v.failed_count + 1, updated_at = p_now
    WHERE email_normalized = p_subject;
  END IF;
  RETURN QUERY SELECT true, 0::bigint;
END
$$;

