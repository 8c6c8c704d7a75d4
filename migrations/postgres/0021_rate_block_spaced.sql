-- byte8-ledger-core 0021 (PostgreSQL): a block of rate permits holds at most two for the same
-- moment; the rest follow one interval apart.
--
-- `byte8_rate_permits` (0011) granted each permit of a block at the earliest time the window
-- rule allowed. A business under its limit over the last minute could therefore get a block of
-- up to 8 permits all for now. One business's requests are sent one after the other, one ledger
-- answer apart (100-150 ms), and a permit not used within `PERMIT_VALIDITY` (250 ms) of its time
-- is dropped: of such a block two or three were used and the rest dropped, and a dropped permit
-- still counts against the business's limit. `bench_service` at 10 tenants logged blocks of 6
-- dropped at once with the back-filling business at 95.5-96 % of its limit.
--
-- Now a block's third and later permits are each at least `p_interval` after the one before:
-- the pace a saturated business keeps anyway, so a business at its pace gets the same permits,
-- and one that may burst gets two at once (what sequential requests can use within the
-- validity) and then its pace. A permit is only ever moved later, which keeps every bound of
-- 0011 (its window and its burst). A block of one or two, and the idle block of 0014, are as
-- before.
CREATE OR REPLACE FUNCTION byte8_rate_permits(
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
    UPDATE rate_limits SET tat = v_tat, recent = v_recent WHERE key = p_key;
    RETURN v_out;
END
$$;
