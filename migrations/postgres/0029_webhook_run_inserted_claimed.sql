-- byte8-ledger-core 0029 (PostgreSQL): a webhook's run on an idle business is inserted already
-- claimed (issue 17). No table changes.
--
-- Since 0028 the webhook's statement (`byte8_enqueue_turn`) inserted the run queued and then
-- claimed it in `byte8_begin_turn`: an `UPDATE` of the row it had just written. A status change is
-- never a HOT update (`status` is in three of the table's eight indexes), so the claim wrote a
-- second version of the row and an entry in seven indexes, and left the first version for vacuum:
-- about 8 of the 70 WAL records an event writes at the busy hour (`pg_stat_statements`,
-- BENCHMARKS.md round 36).
--
-- Now `byte8_enqueue_turn` takes the business's dispatch lease first. When it has it and the
-- business has no open run (none queued, none running), the webhook's run is the only one the turn
-- can claim, and `byte8_enqueue` inserts it as the claim would have left it: `running`, claim 1,
-- its lease until the turn's `p_run_lease_until`. The turn's other answers are what
-- `byte8_begin_turn` gives in that case: nothing more due, whether a callback of the tenant is due
-- (the same one-entry question), and the business's first permits. In every other case the run is
-- queued (or collapsed into a queued one) as before: with the lease taken (runs already open, or a
-- `p_limit` of 0), `byte8_begin_turn` then claims the business's oldest due runs first; under
-- another holder's lease no turn is begun.
--
-- A webhook that queues nothing (a replay, a stale binding, a duplicate) gives back a lease it took
-- for it: the holder names this one turn (`PROCESS/webhook-N`), so nothing else of its holder's is
-- deleted. Everything stays one statement and one transaction. The lease is now taken before the
-- enqueue's advisory lock on the event's key, in every webhook's statement: two webhooks of one
-- business wait for each other on the lease, holding nothing else, and no statement takes the two
-- the other way round (a webhook that begins no turn takes only the key's lock).
--
-- `byte8_enqueue` and `byte8_enqueue_bound` take the claim's lease as a last argument, `NULL` by
-- default (queued, as before): every other caller is unchanged.
DROP FUNCTION byte8_enqueue_bound(BIGINT, TEXT, BIGINT, BIGINT, TEXT, TEXT, TEXT, TEXT, BOOLEAN, TEXT, BIGINT,
                                  BYTEA, TEXT, TIMESTAMPTZ, TEXT);
DROP FUNCTION byte8_enqueue(TEXT, TEXT, TEXT, TEXT, BOOLEAN, TEXT, BIGINT, BYTEA, TEXT, TIMESTAMPTZ, TEXT);

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
    p_claim_until TIMESTAMPTZ DEFAULT NULL,
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
    -- Claimed (the caller holds the business's lease and it has no other open run) or queued.
    run_status := CASE WHEN p_claim_until IS NULL THEN 'queued' ELSE 'running' END;
    INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status,
                      attempts, claim, lease_until, created_at, updated_at, tenant_id, increment_id)
        VALUES (p_scope, p_key, p_event, p_entity, p_raw, p_fingerprint, p_policy, run_status, 0,
                CASE WHEN p_claim_until IS NULL THEN 0 ELSE 1 END, p_claim_until, p_at, p_at, p_tenant,
                p_increment)
        RETURNING id INTO v_id;
    kind := 'new'; run_id := v_id;
END
$$;

CREATE FUNCTION byte8_enqueue_bound(
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
    p_claim_until TIMESTAMPTZ DEFAULT NULL,
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
                           p_policy, p_at, p_increment, p_claim_until) AS e;
END
$$;

CREATE OR REPLACE FUNCTION byte8_enqueue_turn(
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
    p_holder TEXT,
    p_turn_now TIMESTAMPTZ,
    p_lease_until TIMESTAMPTZ,
    p_limit BIGINT,
    p_run_lease_until TIMESTAMPTZ,
    p_permit_key TEXT,
    p_permit_now BIGINT,
    p_permit_count INT,
    p_permit_interval BIGINT,
    p_permit_tolerance BIGINT,
    p_permit_limit INT,
    p_permit_span BIGINT,
    p_permit_idle_gap BIGINT,
    p_permit_idle_count INT
) RETURNS TABLE (kind TEXT, run_id BIGINT, run_status TEXT, turn_held BOOLEAN, turn_more BOOLEAN,
                 turn_callbacks BOOLEAN, turn_permits BIGINT[], run runs)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    q RECORD;
    v_held BOOLEAN := false;
    v_idle BOOLEAN := false;
BEGIN
    -- The lease as `byte8_begin_turn` takes it, before the enqueue's lock on the key: every
    -- webhook's statement takes the two in this order.
    INSERT INTO dispatch_leases AS l (scope, holder, lease_until) VALUES (p_scope, p_holder, p_lease_until)
        ON CONFLICT (scope) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
        WHERE l.holder = excluded.holder OR l.lease_until <= p_turn_now;
    v_held := FOUND;
    v_idle := v_held AND p_limit > 0 AND NOT EXISTS (SELECT 1 FROM runs WHERE tenant_id = p_tenant
                                                     AND scope = p_scope AND status IN ('queued', 'running'));
    SELECT * INTO q FROM byte8_enqueue_bound(p_binding_version, p_replay_key, p_expires_at, p_now, p_scope,
        p_key, p_tenant, p_fingerprint, p_while_queued, p_event, p_entity, p_raw, p_policy, p_at, p_increment,
        CASE WHEN v_idle THEN p_run_lease_until END);
    IF q.kind = 'new' AND v_idle THEN
        -- The run inserted claimed: the turn `byte8_begin_turn` would have begun on an idle business.
        RETURN QUERY SELECT q.kind, q.run_id, q.run_status, true, false,
            COALESCE((SELECT c.due_at FROM callbacks c WHERE c.scope = p_scope AND c.tenant_id = p_tenant
              AND c.delivered_at IS NULL ORDER BY c.due_at LIMIT 1) <= p_turn_now, false),
            CASE WHEN p_permit_key IS NOT NULL THEN byte8_rate_permits(p_permit_key, p_permit_now, p_permit_count,
                p_permit_interval, p_permit_tolerance, p_permit_limit, p_permit_span, p_permit_idle_gap,
                p_permit_idle_count) END,
            r FROM runs r WHERE r.id = q.run_id;
    ELSIF q.kind IN ('new', 'collapsed') AND v_held THEN
        RETURN QUERY SELECT q.kind, q.run_id, q.run_status, t.turn_held, t.turn_more, t.turn_callbacks,
            t.turn_permits, t.run
        FROM byte8_begin_turn(p_scope, p_holder, p_turn_now, p_lease_until, p_tenant, p_limit, p_run_lease_until,
            p_permit_key, p_permit_now, p_permit_count, p_permit_interval, p_permit_tolerance, p_permit_limit,
            p_permit_span, p_permit_idle_gap, p_permit_idle_count) AS t;
    ELSE
        -- No turn: another holder has the lease, or nothing was queued (a replay, a stale binding, a
        -- duplicate), in which case a lease taken for it is given back.
        IF v_held AND q.kind NOT IN ('new', 'collapsed') THEN
            DELETE FROM dispatch_leases WHERE scope = p_scope AND holder = p_holder;
        END IF;
        RETURN QUERY SELECT q.kind, q.run_id, q.run_status, false, false, false, NULL::BIGINT[], NULL::runs;
    END IF;
END
$$;
