-- byte8-ledger-core 0015 (PostgreSQL): a webhook queued only while the binding its token was
-- verified against is still the binding on record (the service's per-process binding cache).
--
-- The service keeps each active tenant's binding in memory, with the row version it was read at
-- (`xmin`), so that a webhook costs no read of `bindings`. A binding changed since (revoked,
-- re-paired with a new key, a new policy) must not let a webhook through on the old copy: this
-- function checks, in the statement that records the `jti` and queues the run, that the tenant's
-- binding row is still that version and active. Otherwise it writes nothing and answers `stale`;
-- the service then reads the binding again and verifies the token against it.
--
-- `xmin` changes with every update of the row (each update writes a new row version), so any
-- change of the binding is seen; a spurious mismatch (a row frozen by VACUUM FREEZE shows a
-- different xmin) costs one more read, never a wrong answer.
--
-- Returns (kind, run_id, run_status) as `byte8_enqueue_once` does, or kind `stale` (nothing
-- written, run_id 0).
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
    SELECT e.kind, e.run_id, e.run_status INTO kind, run_id, run_status
        FROM byte8_enqueue_once(p_replay_key, p_expires_at, p_now, p_scope, p_key, p_tenant, p_fingerprint,
                                p_while_queued, p_event, p_entity, p_raw, p_policy, p_at, p_increment) AS e;
END
$$;
