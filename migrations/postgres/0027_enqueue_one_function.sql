-- byte8-ledger-core 0027 (PostgreSQL): a webhook's enqueue is one PL/pgSQL function, not three
-- nested ones.
--
-- `byte8_enqueue_bound` (0015, 0019) checked the binding, then called `byte8_replay_record`
-- (0023) and `byte8_enqueue` (0017), each through a statement of its own (`IF NOT f(...)`,
-- `SELECT ... INTO ... FROM f(...)`): each nested call is an executor started and ended, a
-- function frame set up, its answer put in a tuple store and read back. `pg_stat_statements` at
-- 1,000 tenants: the webhook's statement 0.500 ms a call, of which the nested functions' own
-- statements (the runs insert, the replay upsert, the look-ups, the binding check) about 0.30 ms;
-- the rest is that glue (benches/statement_times.sh, BENCHMARKS.md).
--
-- `byte8_enqueue_checked` does what the three did, in one body:
--
-- - with `p_binding_version` (not NULL), nothing is written and the answer is `stale` unless the
--   tenant's binding row is still that version (`xmin`) and active (0015);
-- - with `p_replay_key` (not NULL), nothing is written and the answer is `replay` when the key is
--   live in the replay cache; otherwise it is recorded until `p_expires_at`, and one key in
--   sixteen (by `hashtext`) first purges expired keys (`byte8_replay_purge`, 0023, still a
--   function of its own: it sets `plan_cache_mode` for its one statement);
-- - the run is enqueued under the (scope, key)'s advisory lock with the dedupe of `byte8_enqueue`
--   (0012, 0017): a duplicate, a collapse into a queued run, or a new run.
--
-- Every enqueue of the store calls it (the service's with both checks, `RunStore::enqueue` with
-- neither). `byte8_enqueue`, `byte8_enqueue_once` and `byte8_enqueue_bound` are kept, unchanged,
-- for processes of an earlier version still running against this database during an upgrade;
-- this version calls none of them.
CREATE FUNCTION byte8_enqueue_checked(
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
#variable_conflict use_column
DECLARE
    v_id BIGINT;
    v_status TEXT;
BEGIN
    IF p_binding_version IS NOT NULL THEN
        PERFORM FROM bindings b WHERE b.tenant_id = p_tenant AND b.scope = p_scope
            AND b.status = 'active' AND b.xmin::text::bigint = p_binding_version;
        IF NOT FOUND THEN
            kind := 'stale'; run_id := 0; run_status := '';
            RETURN;
        END IF;
    END IF;
    IF p_replay_key IS NOT NULL THEN
        IF hashtext(p_replay_key) & 15 = 0 THEN
            PERFORM byte8_replay_purge(p_now, p_replay_key);
        END IF;
        INSERT INTO replay_cache AS r (key, expires_at) VALUES (p_replay_key, p_expires_at)
            ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE r.expires_at <= p_now;
        IF NOT FOUND THEN
            kind := 'replay'; run_id := 0; run_status := '';
            RETURN;
        END IF;
    END IF;
    -- Serialises every enqueue of this (scope, key), across processes, until the transaction ends.
    PERFORM pg_advisory_xact_lock(hashtextextended('byte8-ledger:enqueue:' || p_scope || chr(31) || p_key, 0));
    IF p_while_queued THEN
        -- The same event again (same fingerprint), whatever became of its run: a duplicate.
        IF p_tenant IS NULL THEN
            SELECT id, status INTO v_id, v_status FROM runs
                WHERE scope = p_scope AND tenant_id IS NULL AND idempotency_key = p_key
                  AND fingerprint = p_fingerprint
                ORDER BY id DESC LIMIT 1;
        ELSE
            SELECT id, status INTO v_id, v_status FROM runs
                WHERE scope = p_scope AND tenant_id = p_tenant AND idempotency_key = p_key
                  AND fingerprint = p_fingerprint
                ORDER BY id DESC LIMIT 1;
        END IF;
        IF FOUND THEN
            kind := 'duplicate'; run_id := v_id; run_status := v_status;
            RETURN;
        END IF;
    END IF;
    -- Row-locked: a claimer skips (SKIP LOCKED) the run while it may be collapsed into. NO KEY:
    -- recording an attempt of the run (its foreign key) need not wait for us.
    IF p_tenant IS NULL THEN
        SELECT id, status INTO v_id, v_status FROM runs
            WHERE scope = p_scope AND tenant_id IS NULL AND idempotency_key = p_key
            ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE;
    ELSE
        SELECT id, status INTO v_id, v_status FROM runs
            WHERE scope = p_scope AND tenant_id = p_tenant AND idempotency_key = p_key
            ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE;
    END IF;
    IF FOUND THEN
        IF NOT p_while_queued THEN
            kind := 'duplicate'; run_id := v_id; run_status := v_status;
            RETURN;
        END IF;
        IF v_status = 'queued' THEN
            UPDATE runs SET raw = p_raw, fingerprint = p_fingerprint, policy = p_policy, updated_at = p_at,
                            increment_id = COALESCE(p_increment, increment_id)
                WHERE id = v_id AND status = 'queued';
            IF FOUND THEN
                kind := 'collapsed'; run_id := v_id; run_status := 'queued';
                RETURN;
            END IF;
        END IF;
    END IF;
    INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status,
                      attempts, created_at, updated_at, tenant_id, increment_id)
        VALUES (p_scope, p_key, p_event, p_entity, p_raw, p_fingerprint, p_policy, 'queued', 0, p_at, p_at,
                p_tenant, p_increment)
        RETURNING id INTO v_id;
    kind := 'new'; run_id := v_id; run_status := 'queued';
END
$$;
