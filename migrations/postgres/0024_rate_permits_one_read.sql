-- byte8-ledger-core 0024 (PostgreSQL): a block of rate permits reads and locks its business's
-- row once.
--
-- `byte8_rate_permits` with the idle arguments (0014) read the business's last permit, then
-- called the function of 0011/0021, which tried to insert the business's row
-- (`INSERT … ON CONFLICT DO NOTHING`: a probe of the key's index on every call), and read the
-- row again under a lock. Three statements and a second function for one row, on the Sage
-- request path of every event: 0.13 ms a call at 1,000 tenants (`pg_stat_statements`,
-- benches/statement_times.sh).
--
-- Now the function reads the row once under its lock, inserts it only when it is not there yet
-- (then reads it under the lock, as before: a concurrent first insert is waited for), decides the
-- idle block from that same read, and grants the permits as 0021 does. The permits are the same
-- (the loop is 0021's), and the idle decision reads the row as locked rather than as of a read
-- just before it, which another process's permits could have made stale. The seven-argument
-- function (0011, 0021: no idle block) calls this one with the idle block its own count, so that
-- the grant is written once.
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
    UPDATE rate_limits SET tat = v_tat, recent = v_recent WHERE key = p_key;
    RETURN v_out;
END
$$;

CREATE OR REPLACE FUNCTION byte8_rate_permits(
    p_key TEXT,
    p_now BIGINT,
    p_count INT,
    p_interval BIGINT,
    p_tolerance BIGINT,
    p_limit INT,
    p_span BIGINT
) RETURNS BIGINT[] LANGUAGE plpgsql AS $$
BEGIN
    RETURN byte8_rate_permits(p_key, p_now, p_count, p_interval, p_tolerance, p_limit, p_span, NULL, p_count);
END
$$;
