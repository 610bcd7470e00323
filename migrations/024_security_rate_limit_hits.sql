-- Every limit a call counts against, in one statement and all or nothing: when any of the keys
-- is full the call counts against none of them (a refused call spends no budget anywhere, as
-- keygate_rate_limit_hit never counted a refused hit on its own key), and the answer's retry
-- delay is the longest of the full keys'. Rows are locked in the order given; callers sort the
-- keys, so that two calls naming the same keys cannot deadlock. keygate_rate_limit_hit stays
-- for instances of the previous version during a rolling upgrade.
CREATE FUNCTION keygate_rate_limit_hits(p_keys text[], p_limits integer[], p_windows integer[],
                                        p_now timestamptz)
RETURNS TABLE (allowed boolean, retry_after_ms bigint)
LANGUAGE plpgsql
AS $$
DECLARE
  v_window interval;
  v_hits timestamptz[];
  v_live timestamptz[];
  v_allowed boolean := true;
  v_retry bigint := 0;
BEGIN
  FOR i IN 1 .. coalesce(cardinality(p_keys), 0) LOOP
    v_window := make_interval(secs => p_windows[i]);
    INSERT INTO rate_limits (key, expires_at) VALUES (p_keys[i], p_now + v_window)
    ON CONFLICT (key) DO NOTHING;
    SELECT r.hits INTO v_hits FROM rate_limits r WHERE r.key = p_keys[i] FOR UPDATE;
    v_live := ARRAY(SELECT h FROM unnest(v_hits) AS h WHERE h > p_now - v_window ORDER BY h);
    IF cardinality(v_live) >= p_limits[i] THEN
      v_allowed := false;
      v_retry := GREATEST(v_retry, GREATEST(1, ceil(extract(epoch FROM
        (v_live[cardinality(v_live) - p_limits[i] + 1] + v_window - p_now)) * 1000))::bigint);
    END IF;
  END LOOP;
  IF v_allowed THEN
    FOR i IN 1 .. coalesce(cardinality(p_keys), 0) LOOP
      v_window := make_interval(secs => p_windows[i]);
      UPDATE rate_limits
      SET hits = ARRAY(SELECT h FROM unnest(hits) AS h WHERE h > p_now - v_window ORDER BY h) || p_now,
          expires_at = p_now + v_window
      WHERE key = p_keys[i];
    END LOOP;
  END IF;
  RETURN QUERY SELECT v_allowed, v_retry;
END
$$;
