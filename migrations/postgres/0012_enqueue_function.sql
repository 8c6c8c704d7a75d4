-- byte8-ledger-core 0012 (PostgreSQL): `RunStore::enqueue` in one round trip. What the store did
-- in a transaction of five to six statements (BEGIN, the advisory lock of the (scope, key), one or
-- two dedupe reads, the insert or the collapsing update, COMMIT) is this function, called in one
-- statement: its own transaction holds the advisory lock until it ends, and every query in it
-- takes a fresh snapshot after the lock is granted (the function is VOLATILE, the isolation READ
-- COMMITTED), so it sees what the previous holder of the lock committed, exactly as the
-- statements of the transaction did.
--
-- Returns (kind, run_id, run_status): kind `new` (a run inserted), `collapsed` (a queued run of
-- the same key took this event's raw line, fingerprint and policy: `p_while_queued` only) or
-- `duplicate` (nothing written; the run found and its status).
CREATE FUNCTION byte8_enqueue(
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
        SELECT id, status INTO v_id, v_status FROM runs
            WHERE scope = p_scope AND idempotency_key = p_key AND fingerprint = p_fingerprint
              AND tenant_id IS NOT DISTINCT FROM p_tenant
            ORDER BY id DESC LIMIT 1;
        IF FOUND THEN
            kind := 'duplicate'; run_id := v_id; run_status := v_status;
            RETURN;
        END IF;
    END IF;
    -- Row-locked: a claimer skips (SKIP LOCKED) the run while it may be collapsed into. NO KEY:
    -- recording an attempt of the run (its foreign key) need not wait for us.
    SELECT id, status INTO v_id, v_status FROM runs
        WHERE scope = p_scope AND idempotency_key = p_key AND tenant_id IS NOT DISTINCT FROM p_tenant
        ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE;
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
