-- byte8-ledger-core 0013 (PostgreSQL): a webhook's `jti` recorded and its run queued in one
-- statement (the service's `DispatchStore::enqueue_once`). What the webhook route did in two
-- statements — the replay cache's upsert (expired keys purged on the way, a hundred at most) and
-- then `byte8_enqueue` — is this function, in the call's own transaction: the `jti` is recorded
-- only with the run it authenticates, and a replay (a live `jti` already recorded) queues
-- nothing.
--
-- Returns (kind, run_id, run_status) as `byte8_enqueue` does, or kind `replay` (nothing written,
-- run_id 0).
CREATE FUNCTION byte8_enqueue_once(
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
    DELETE FROM replay_cache WHERE replay_cache.key IN
        (SELECT c.key FROM replay_cache c WHERE c.expires_at <= p_now AND c.key <> p_replay_key
         LIMIT 100 FOR UPDATE SKIP LOCKED);
    -- A new key is inserted, an expired one taken over, a live one left alone: a replay.
    INSERT INTO replay_cache AS r (key, expires_at) VALUES (p_replay_key, p_expires_at)
        ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE r.expires_at <= p_now;
    IF NOT FOUND THEN
        kind := 'replay'; run_id := 0; run_status := '';
        RETURN;
    END IF;
    SELECT e.kind, e.run_id, e.run_status INTO kind, run_id, run_status
        FROM byte8_enqueue(p_scope, p_key, p_tenant, p_fingerprint, p_while_queued, p_event, p_entity, p_raw,
                           p_policy, p_at, p_increment) AS e;
END
$$;
