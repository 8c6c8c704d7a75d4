-- byte8-ledger-core 0019 (PostgreSQL): a webhook's replay check costs the same however many
-- `jti`s are live, and its enqueue one function call fewer.
--
-- Every webhook purged up to a hundred expired keys of the replay cache on the way
-- (`byte8_enqueue_once`, migration 0013, and the service's `ReplayCache::check_and_record`):
-- `DELETE … WHERE key IN (SELECT key … WHERE expires_at <= now LIMIT 100 FOR UPDATE SKIP LOCKED)`.
-- The planner answered it with a hash semi-join over a sequential scan of the whole table, and the
-- inner `SELECT` without an order with a second one: a webhook read every live `jti` twice. The
-- cache holds a key per webhook for the token's lifetime, so the cost grew with the node's
-- webhook rate. A `perf` profile of `serve`'s database at 1,000 tenants found it at about 15 % of
-- PostgreSQL's CPU (EXPLAIN ANALYZE with 3,197 keys, 100 of them expired: 2.4 ms to run, 1.1 ms
-- to plan).
--
-- `byte8_replay_record` is the one place that records a `jti` now. Its purge takes the oldest
-- expired keys by `replay_cache_by_expiry` (`ORDER BY expires_at … LIMIT 100`) and deletes them
-- by key, so that it reads only expired entries; nothing expired is one index probe. It answers
-- whether the key was recorded: a new key is inserted, an expired one taken over, and a live one
-- left alone (false, a replay).
--
-- `byte8_enqueue_once` and `byte8_enqueue_bound` call it as an expression, and the bound
-- function calls `byte8_enqueue` itself instead of going through `byte8_enqueue_once`. The
-- webhook's statement nests two functions deep, not three. Their arguments and answers are
-- unchanged.
--
-- The function's statements keep one generic plan a connection (`plan_cache_mode`): a custom
-- plan for the purge cost 0.14 ms of planning at nearly every call, as much as running it, and
-- the generic plan is the same (the expiry index in order, a hundred at most, then the keys).
CREATE FUNCTION byte8_replay_record(p_key TEXT, p_expires_at BIGINT, p_now BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    DELETE FROM replay_cache WHERE key = ANY (ARRAY(
        SELECT c.key FROM replay_cache c WHERE c.expires_at <= p_now AND c.key <> p_key
        ORDER BY c.expires_at LIMIT 100 FOR UPDATE SKIP LOCKED));
    INSERT INTO replay_cache AS r (key, expires_at) VALUES (p_key, p_expires_at)
        ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE r.expires_at <= p_now;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION byte8_enqueue_once(
    p_replay_key TEXT,
    p_expires_at BIGINT,
    p_now BIGINT,
    p_scope TEXT,
    p_key TEXT,
    p_tenant TEXT,
    p_fingerprint TEXT,
    p_while_queued BOOLEAN,
    p_event TEXT,
    p_entity BIGINT,
    p_raw BYTEA,
    p_policy TEXT,
    p_at TIMESTAMPTZ,
    p_increment TEXT,
    OUT kind TEXT,
    OUT run_id BIGINT,
    OUT run_status TEXT
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT byte8_replay_record(p_replay_key, p_expires_at, p_now) THEN
        kind := 'replay'; run_id := 0; run_status := '';
        RETURN;
    END IF;
    SELECT e.kind, e.run_id, e.run_status INTO kind, run_id, run_status
        FROM byte8_enqueue(p_scope, p_key, p_tenant, p_fingerprint, p_while_queued, p_event, p_entity, p_raw,
                           p_policy, p_at, p_increment) AS e;
END
$$;

CREATE OR REPLACE FUNCTION byte8_enqueue_bound(
    p_binding_version BIGINT,
    p_replay_key TEXT,
    p_expires_at BIGINT,
    p_now BIGINT,
    p_scope TEXT,
    p_key TEXT,
    p_tenant TEXT,
    p_fingerprint TEXT,
    p_while_queued BOOLEAN,
    p_event TEXT,
    p_entity BIGINT,
    p_raw BYTEA,
    p_policy TEXT,
    p_at TIMESTAMPTZ,
    p_increment TEXT,
    OUT kind TEXT,
    OUT run_id BIGINT,
    OUT run_status TEXT
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM bindings b WHERE b.tenant_id = p_tenant AND b.scope = p_scope
                   AND b.status = 'active' AND b.xmin::text::bigint = p_binding_version) THEN
        kind := 'stale'; run_id := 0; run_status := '';
        RETURN;
    END IF;
    IF NOT byte8_replay_record(p_replay_key, p_expires_at, p_now) THEN
        kind := 'replay'; run_id := 0; run_status := '';
        RETURN;
    END IF;
    SELECT e.kind, e.run_id, e.run_status INTO kind, run_id, run_status
        FROM byte8_enqueue(p_scope, p_key, p_tenant, p_fingerprint, p_while_queued, p_event, p_entity, p_raw,
                           p_policy, p_at, p_increment) AS e;
END
$$;
