-- byte8-ledger-core 0023 (PostgreSQL): a webhook's replay check purges expired keys one time in
-- sixteen, up to sixteen times as many at once.
--
-- `byte8_replay_record` (0019) purged up to a hundred expired keys before every upsert. A node
-- records one key a webhook and each key expires once, so at a steady rate every record found
-- about one expired key and deleted it: a `DELETE` planned, started and ended for one row, and a
-- function-level `SET plan_cache_mode` (a configuration level opened and closed) on every
-- webhook. `pg_stat_statements` at 1,000 tenants: the purge 0.083 ms of the webhook's 0.499 ms
-- statement (benches/statement_times.sh, BENCHMARKS.md).
--
-- The purge is `byte8_replay_purge` now: the 1,600 oldest expired keys other than the one being
-- recorded, read by the expiry index (`replay_cache_by_expiry`) as before. `byte8_replay_record`
-- calls it when the key's `hashtext` is a multiple of sixteen. The keys are SHA-256 digests of
-- the tokens' `jti`s (the service's `replay_key`), and a `jti` is recorded only once its token's
-- signature checked, so one record in sixteen purges and the cache is purged at the same
-- capacity as before: sixteen hundred keys a sixteen records, a hundred a record. The upsert,
-- its answer, and the other functions that call `byte8_replay_record` are unchanged.
CREATE FUNCTION byte8_replay_purge(p_now BIGINT, p_keep TEXT) RETURNS VOID
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    DELETE FROM replay_cache WHERE key = ANY (ARRAY(
        SELECT c.key FROM replay_cache c WHERE c.expires_at <= p_now AND c.key <> p_keep
        ORDER BY c.expires_at LIMIT 1600 FOR UPDATE SKIP LOCKED));
END
$$;

CREATE OR REPLACE FUNCTION byte8_replay_record(p_key TEXT, p_expires_at BIGINT, p_now BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF hashtext(p_key) & 15 = 0 THEN
        PERFORM byte8_replay_purge(p_now, p_key);
    END IF;
    INSERT INTO replay_cache AS r (key, expires_at) VALUES (p_key, p_expires_at)
        ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE r.expires_at <= p_now;
    RETURN FOUND;
END
$$;
