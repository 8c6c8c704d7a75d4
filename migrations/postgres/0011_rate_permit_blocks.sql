-- byte8-ledger-core 0011 (PostgreSQL): the shared rate limiter (`store::postgres::SharedRateLimiter`)
-- hands out its permits in blocks: one call takes the next `p_count` permits of a business under
-- the window rule of `http::limit::Window` (each one `max(now, tat − τ, the permit L back + span,
-- the previous permit)`, then `tat ← max(tat, permit) + T`), records them in the business's row and
-- returns `[now, permit₁, …, permitₖ]` in microseconds, `now` being `p_now` or, when it is NULL,
-- the server's clock. The row is locked for the call, so concurrent callers (any process) are
-- serialised exactly as the one-permit statement serialised them.
CREATE FUNCTION byte8_rate_permits(
    p_key TEXT,
    p_now BIGINT,
    p_count INT,
    p_interval BIGINT,
    p_tolerance BIGINT,
    p_limit INT,
    p_span BIGINT
) RETURNS BIGINT[] LANGUAGE plpgsql AS $$
DECLARE
    v_now BIGINT := coalesce(p_now, floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    v_tat BIGINT;
    v_recent BIGINT[];
    v_at BIGINT;
    v_len INT;
    v_out BIGINT[];
BEGIN
    v_out := ARRAY[v_now];
    INSERT INTO rate_limits (key, tat, recent) VALUES (p_key, v_now, '{}') ON CONFLICT (key) DO NOTHING;
    SELECT tat, recent INTO v_tat, v_recent FROM rate_limits WHERE key = p_key FOR UPDATE;
    FOR i IN 1..greatest(p_count, 1) LOOP
        v_len := coalesce(cardinality(v_recent), 0);
        v_at := greatest(v_now, v_tat - p_tolerance);
        IF v_len >= p_limit THEN
            v_at := greatest(v_at, v_recent[v_len - p_limit + 1] + p_span);
        END IF;
        IF v_len > 0 THEN
            v_at := greatest(v_at, v_recent[v_len]);
        END IF;
        v_tat := greatest(v_tat, v_at) + p_interval;
        v_recent := v_recent || v_at;
        IF cardinality(v_recent) > p_limit THEN
            v_recent := v_recent[cardinality(v_recent) - p_limit + 1:];
        END IF;
        v_out := v_out || v_at;
    END LOOP;
    UPDATE rate_limits SET tat = v_tat, recent = v_recent WHERE key = p_key;
    RETURN v_out;
END
$$;
