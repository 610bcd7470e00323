-- Rate limits that hold across instances. Each key keeps the times of its accepted hits in
-- the current window (at most `limit` of them): an exact sliding window, one row per key,
-- bounded in size, decided under the row's lock so concurrent instances count correctly.
-- Fixed windows would let twice the limit through across a window edge; a token bucket
-- (GCRA) would let a fourth request in before ten minutes have passed after a burst of three.
CREATE TABLE rate_limits (
  key text PRIMARY KEY,
  hits timestamptz[] NOT NULL DEFAULT '{}',
  -- After this the row says nothing any more and may be swept.
  expires_at timestamptz NOT NULL
);

CREATE INDEX rate_limits_expires_at_idx ON rate_limits (expires_at);

-- Records a hit for p_key when fewer than p_limit hits fall in the window ending at p_now;
-- answers whether it was allowed and, when not, in how many milliseconds the oldest hit in
-- the window leaves it. Refused hits are not recorded.
CREATE FUNCTION keygate_rate_limit_hit(p_key text, p_limit integer, p_window interval, p_now timestamptz)
RETURNS TABLE (allowed boolean, retry_after_ms bigint)
LANGUAGE plpgsql
AS $$
DECLARE
  v_hits timestamptz[];
  v_live timestamptz[];
BEGIN
  INSERT INTO rate_limits (key, expires_at) VALUES (p_key, p_now + p_window)
  ON CONFLICT (key) DO NOTHING;
  SELECT r.hits INTO v_hits FROM rate_limits r WHERE r.key = p_key FOR UPDATE;
  v_live := ARRAY(SELECT h FROM unnest(v_hits) AS h WHERE h > p_now - p_window ORDER BY h);
  IF cardinality(v_live) < p_limit THEN
    UPDATE rate_limits SET hits = v_live || p_now, expires_at = p_now + p_window WHERE key = p_key;
    RETURN QUERY SELECT true, 0::bigint;
  ELSE
    UPDATE rate_limits SET hits = v_live WHERE key = p_key;
    RETURN QUERY SELECT false,
      GREATEST(1, ceil(extract(epoch FROM (v_live[cardinality(v_live) - p_limit + 1] + p_window - p_now)) * 1000))::bigint;
  END IF;
END
$$;

-- Failed logins per address (case-folded), whether or not an account has it, so that a
-- lockout says nothing about which addresses exist.
CREATE TABLE login_failures (
  email_normalized text PRIMARY KEY,
  failed_count integer NOT NULL DEFAULT 0,
  -- How many lockouts in a row; each one lasts twice as long as the one before.
  lockouts integer NOT NULL DEFAULT 0,
  locked_until timestamptz,
  updated_at timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limits, login_failures TO keygate_tenant;
