-- byte8-ledger-core 0014 (PostgreSQL): the shared rate limiter's block for an idle business. This
-- overload of `byte8_rate_permits` (0011) takes two more arguments: when the business's last
-- permit (every process's) is at least `p_idle_gap` µs before now, or it has none, the call takes
-- at least `p_idle_count` permits. An event's requests follow each other within a permit's
-- validity, so an idle business's event of one or two requests costs one statement; a business
-- any process used within the gap (busy, or at its pace) gets `p_count` as before, so its unused
-- permits never eat its burst. The permits themselves are the 0011 function's, under its lock:
-- two callers that both saw the business idle take a permit or two more, never one beyond the
-- window rule.
CREATE FUNCTION byte8_rate_permits(
    p_key TEXT,
    p_now BIGINT,
    p_count INT,
    p_interval BIGINT,
    p_tolerance BIGINT,
    p_limit INT,
    p_span BIGINT,
    p_idle_gap BIGINT,
    p_idle_count INT
) RETURNS BIGINT[] LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT := coalesce(p_now, floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    v_last BIGINT;
    v_count INT := p_count;
BEGIN
    SELECT recent[cardinality(recent)] INTO v_last FROM rate_limits WHERE key = p_key;
    IF v_last IS NULL OR v_last <= v_now - p_idle_gap THEN
        v_count := greatest(v_count, p_idle_count);
    END IF;
    RETURN byte8_rate_permits(p_key, v_now, v_count, p_interval, p_tolerance, p_limit, p_span);
END
$$;
