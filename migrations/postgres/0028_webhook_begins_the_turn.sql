-- byte8-ledger-core 0028 (PostgreSQL): a worker's turn is a function, and the webhook's enqueue
-- can begin it in the same statement (issue 17). No table changes. (0027 is SQLite's.)
--
-- `byte8_begin_turn` is the service's `DispatchStore::begin_turn` as it was written in Rust
-- since round 29: the business's dispatch lease taken (or renewed by its holder) and, only when
-- it was, up to `limit` of the tenant's due runs claimed (oldest first, `SKIP LOCKED`), whether
-- more are due, whether a callback of the tenant is due now (asked as "the business's oldest
-- undelivered callback, due by now?", which `callbacks_due` answers reading one entry), and,
-- when a run was claimed and permit arguments are given, a block of the business's rate permits
-- (`byte8_rate_permits`, 0024). The claimed runs come back as whole `runs` rows; a turn that
-- claims nothing still answers one row, with `run` null. The query sits in a `RETURN QUERY` and
-- names its arguments `$1` … `$16`, in the order of the function's parameters, so that a test can
-- take its text from `pg_proc` and explain it as a prepared statement.
--
-- Its plan is the generic one, always (`plan_cache_mode`, set for the function's calls only). A
-- statement prepared by a pool used PostgreSQL's default, `auto`: after five executions with
-- custom plans it compares their mean cost with the generic plan's and keeps whichever looked
-- cheaper, so some connections planned the turn afresh at every call (0.28 ms of planning an
-- event in one bench run of round 31) and which ones was chance. The generic plan is the one the
-- turn's plan test checks on a node with a long history (migrations 0020 and 0022).
CREATE FUNCTION byte8_begin_turn(
    p_scope TEXT,
    p_holder TEXT,
    p_now TIMESTAMPTZ,
    p_lease_until TIMESTAMPTZ,
    p_tenant TEXT,
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
) RETURNS TABLE (turn_held BOOLEAN, turn_more BOOLEAN, turn_callbacks BOOLEAN, turn_permits BIGINT[], run runs)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY WITH lease AS (INSERT INTO dispatch_leases AS l (scope, holder, lease_until) VALUES ($1, $2, $4)
          ON CONFLICT (scope) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
          WHERE l.holder = excluded.holder OR l.lease_until <= $3 RETURNING 1 AS held),
        cand AS MATERIALIZED (SELECT id FROM runs WHERE EXISTS (SELECT 1 FROM lease) AND scope = $1 AND tenant_id = $5
          AND status IN ('queued', 'running')
          AND ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $3))
               OR (status = 'running' AND lease_until <= $3))
          ORDER BY id LIMIT $6 + 1 FOR UPDATE SKIP LOCKED),
        next AS (SELECT id FROM cand ORDER BY id LIMIT $6),
        claimed AS (UPDATE runs SET status = 'running', claim = runs.claim + 1, lease_until = $7, updated_at = $3
          FROM next WHERE runs.id = next.id RETURNING runs AS run),
        permits AS MATERIALIZED (SELECT byte8_rate_permits($8, $9, $10, $11, $12, $13, $14, $15, $16) AS p
          WHERE $8::text IS NOT NULL AND EXISTS (SELECT 1 FROM next))
    SELECT EXISTS (SELECT 1 FROM lease), (SELECT count(*) FROM cand) > $6,
        COALESCE((SELECT c.due_at FROM callbacks c WHERE c.scope = $1 AND c.tenant_id = $5
          AND c.delivered_at IS NULL ORDER BY c.due_at LIMIT 1) <= $3, false),
        (SELECT p FROM permits), claimed.run
    FROM (SELECT 1) AS one LEFT JOIN claimed ON true;
END
$$;

-- `byte8_enqueue_bound` (0015: the webhook's `jti` recorded, its tenant's binding checked, its run
-- queued) and then, only when a run was queued or collapsed into a queued one, `byte8_begin_turn`
-- for the run's business and tenant: the webhook route of a process whose workers can take the
-- tenant at once begins their turn in the statement that queues the webhook's run, a round trip
-- and a transaction fewer an event than the enqueue and the worker's own `begin_turn`. Everything
-- the statement writes is written together or not at all. The enqueue's answer (`kind`, `run_id`,
-- `run_status`) comes first; the turn's columns follow, as `byte8_begin_turn` answers them
-- (`turn_held` false, and `run` null, when no turn was begun: a replay, a stale binding, a
-- duplicate, or a business whose lease another holder has).
CREATE FUNCTION byte8_enqueue_turn(
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
BEGIN
    SELECT * INTO q FROM byte8_enqueue_bound(p_binding_version, p_replay_key, p_expires_at, p_now, p_scope,
        p_key, p_tenant, p_fingerprint, p_while_queued, p_event, p_entity, p_raw, p_policy, p_at, p_increment);
    IF q.kind IN ('new', 'collapsed') THEN
        RETURN QUERY SELECT q.kind, q.run_id, q.run_status, t.turn_held, t.turn_more, t.turn_callbacks,
            t.turn_permits, t.run
        FROM byte8_begin_turn(p_scope, p_holder, p_turn_now, p_lease_until, p_tenant, p_limit, p_run_lease_until,
            p_permit_key, p_permit_now, p_permit_count, p_permit_interval, p_permit_tolerance, p_permit_limit,
            p_permit_span, p_permit_idle_gap, p_permit_idle_count) AS t;
    ELSE
        RETURN QUERY SELECT q.kind, q.run_id, q.run_status, false, false, false, NULL::BIGINT[], NULL::runs;
    END IF;
END
$$;
