-- byte8-ledger-core 0017 (PostgreSQL): a business's claims and enqueues cost the same however
-- many runs it keeps.
--
-- `tenant_id IS NOT DISTINCT FROM $x` cannot bound an index scan on `tenant_id`: the enqueue's
-- look-up of a key (`byte8_enqueue`, migration 0012) read every entry of the business in
-- `runs_by_key`, and a claim every entry of the business in `runs_due`: with 200,000 runs kept
-- for one business, 10-20 ms and 0.5-7 ms a call, growing with the history (benches/
-- history_plans.sql, BENCHMARKS.md). `byte8_enqueue` now asks `tenant_id = p_tenant` (or
-- `tenant_id IS NULL`), which bounds the scan to the key (0.03 ms), and the claims
-- (`RunStore::claim_next`, the service's `begin_turn`) read `runs_open_by_tenant`: the open runs
-- of each (business, tenant) in id order, a partial index as small as the queue (0.02 ms).
-- Without it, `scope = $1 AND tenant_id = $2` is left to the planner's estimates, which took
-- `runs_by_entity` and read the whole history in one measurement (46 ms).
CREATE INDEX runs_open_by_tenant ON runs (scope, tenant_id, id) WHERE status IN ('queued', 'running');

CREATE OR REPLACE FUNCTION byte8_enqueue(
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
