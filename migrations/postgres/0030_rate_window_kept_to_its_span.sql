-- byte8-ledger-core 0030 (PostgreSQL): the shared rate limiter keeps only the permits of the
-- last span (issue 17).
--
-- `rate_limits.recent` held the permit times of a business's last `L` requests (0009): with
-- Sage's 200 a minute, 1.6 KB. A limit set far above the traffic (a back-fill into a simulator
-- with `SAGE_REQUESTS_PER_MINUTE=6000000`) kept every permit ever given, up to six million, and
-- each permit rewrote the whole array: a back-fill of 3,000 events into a new database spent
-- 0.49 ms a request in that `UPDATE` alone, and more with every request (BENCHMARKS.md, round
-- 38). A permit a span (`p_span`: the minute and its margin) or more before the newest can hold
-- no later permit back, since every later one is at or after the newest; the function now drops
-- those before it writes the row, as the rule in process does (`Window::reserve`). The permits
-- given are the same; the array holds at most the last span's permits, and never more than `L`.
-- The seven-argument function (0024) calls this one and is unchanged.
CREATE OR REPLACE FUNCTION byte8_rate_permits(
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
    v_count INT := p_count;
    v_tat BIGINT;
    v_recent BIGINT[];
    v_at BIGINT;
    v_len INT;
    v_from INT;
    v_out BIGINT[];
BEGIN
    SELECT tat, recent INTO v_tat, v_recent FROM rate_limits WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rate_limits (key, tat, recent) VALUES (p_key, v_now, '{}') ON CONFLICT (key) DO NOTHING;
        SELECT tat, recent INTO v_tat, v_recent FROM rate_limits WHERE key = p_key FOR UPDATE;
    END IF;
    v_len := coalesce(cardinality(v_recent), 0);
    IF v_len = 0 OR v_recent[v_len] <= v_now - p_idle_gap THEN
        v_count := greatest(v_count, p_idle_count);
    END IF;
    v_out := ARRAY[v_now];
    FOR i IN 1..greatest(v_count, 1) LOOP
        v_len := coalesce(cardinality(v_recent), 0);
        v_at := greatest(v_now, v_tat - p_tolerance);
        IF v_len >= p_limit THEN
            v_at := greatest(v_at, v_recent[v_len - p_limit + 1] + p_span);
        END IF;
        IF v_len > 0 THEN
            v_at := greatest(v_at, v_recent[v_len]);
        END IF;
        -- The block's third permit on: one interval after the one before (v_out[1] is "now").
        IF i >= 3 THEN
            v_at := greatest(v_at, v_out[i] + p_interval);
        END IF;
        v_tat := greatest(v_tat, v_at) + p_interval;
        v_recent := v_recent || v_at;
        IF cardinality(v_recent) > p_limit THEN
            v_recent := v_recent[cardinality(v_recent) - p_limit + 1:];
        END IF;
        v_out := v_out || v_at;
    END LOOP;
    -- Only the permits less than a span before the newest can hold a later one back (every
    -- later permit is at or after the newest): the older ones go, as in process.
    v_len := cardinality(v_recent);
    v_from := 1;
    WHILE v_from < v_len AND v_recent[v_from] <= v_recent[v_len] - p_span LOOP
        v_from := v_from + 1;
    END LOOP;
    IF v_from > 1 THEN
        v_recent := v_recent[v_from:];
    END IF;
    UPDATE rate_limits SET tat = v_tat, recent = v_recent WHERE key = p_key;
    RETURN v_out;
END
$$;
