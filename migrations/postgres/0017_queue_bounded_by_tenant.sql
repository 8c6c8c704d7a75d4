-- byte8-ledger-core 0017 (PostgreSQL): a business's claims and enqueues cost the same however
-- many runs it keeps.
--
-- `tenant_id IS NOT DISTINCT FROM $x` cannot bound an index scan on `tenant_id`, and three
-- indexes led with (scope, tenant_id): the enqueue's look-up of a key (`byte8_enqueue`, migration
-- 0012) read every entry of the business in `runs_by_key`, a claim every entry of the business
-- in `runs_due`, and asked `tenant_id =` instead, the planner's generic plans (a pooled
-- connection's, a PL/pgSQL function's) took `runs_by_entity` or `runs_due` on (scope, tenant_id)
-- alone and read the tenant's whole history. With 200,000 runs kept for one business: 11-22 ms
-- an enqueue, 0.5-52 ms a claim, growing with the history (benches/history_plans.sql,
-- BENCHMARKS.md). Now every hot look-up is bounded by what it asks for:
--
-- - `runs_by_key` (scope, idempotency_key, tenant_id, id): a key's runs, newest last, with or
--   without a tenant condition (the enqueue's; `find_by_key` and `requeue` name none);
-- - `runs_by_entity` (scope, magento_entity_id, tenant_id): an entity's runs (the status route);
-- - `runs_due` (scope, status, tenant_id, next_attempt_at): a business's runs of a status (dead
--   letters, the queue's age) and, by tenant, its open runs (the claims ask `status IN ('queued',
--   'running')` and `tenant_id =` or `tenant_id IS NULL`; `runs_by_tenant` serves them as well);
-- - `byte8_enqueue` asks `tenant_id = p_tenant` (or `tenant_id IS NULL`).
--
-- The same number of indexes as before; none leads with (scope, tenant_id) any more.
DROP INDEX runs_by_key;
CREATE INDEX runs_by_key ON runs (scope, idempotency_key, tenant_id, id);
DROP INDEX runs_by_entity;
CREATE INDEX runs_by_entity ON runs (scope, magento_entity_id, tenant_id);
DROP INDEX runs_due;
CREATE INDEX runs_due ON runs (scope, status, tenant_id, next_attempt_at);

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
