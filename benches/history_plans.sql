-- What the queue's look-ups cost on PostgreSQL when a business keeps a long history
-- (BENCHMARKS.md, "A queue that does not slow down with history"). Run against a test or bench
-- database the store has migrated (not one in use: the claims' "before" plans are taken with
-- `runs_open_by_tenant` dropped inside a transaction that is rolled back, which locks `runs`
-- meanwhile), e.g.:
--
--   psql 'postgres://postgres@localhost/byte8_bench?host=/work/pg' -f benches/history_plans.sql
--
-- It adds 200,000 synced runs for business `history-plans` (one tenant), prints the generic plans
-- (what a pooled connection or a PL/pgSQL function runs after its first executions) with their
-- timings, and removes the runs again. Each pair is the look-up as it was before migration 0017
-- and as it is now.

INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status,
                  attempts, created_at, updated_at, tenant_id, claim)
SELECT 'history-plans', 'invoice.created:' || g, 'invoice.created', g, '\x7b7d'::bytea, 'fp' || g, '{}',
       'synced', 1, now() - interval '30 days', now() - interval '30 days', 'history-plans-t', 1
FROM generate_series(1, 200000) AS g;
ANALYZE runs;
SET plan_cache_mode = force_generic_plan;

-- The enqueue's look-up of a key (byte8_enqueue): before, `IS NOT DISTINCT FROM` (every entry of
-- the business read); now `=` (the key's entries only).
PREPARE key_before(text, text, text) AS
    SELECT id, status FROM runs WHERE scope = $1 AND idempotency_key = $3 AND tenant_id IS NOT DISTINCT FROM $2
    ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE key_before('history-plans', 'history-plans-t', 'invoice.created:0');
PREPARE key_now(text, text, text) AS
    SELECT id, status FROM runs WHERE scope = $1 AND tenant_id = $2 AND idempotency_key = $3
    ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE key_now('history-plans', 'history-plans-t', 'invoice.created:0');

-- A claim's candidates (RunStore::claim_next, the service's begin_turn), without
-- `runs_open_by_tenant` (as before migration 0017): `IS NOT DISTINCT FROM` (every `runs_due`
-- entry of the business read) and `=` alone (the planner's choice, `runs_by_entity`: the whole
-- history read). Then, with the index, the claim as it is now (the open runs only).
BEGIN;
DROP INDEX runs_open_by_tenant;
PREPARE claim_before(text, text, timestamptz, int) AS
    SELECT id FROM runs WHERE scope = $1 AND tenant_id IS NOT DISTINCT FROM $2
      AND ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $3))
           OR (status = 'running' AND lease_until <= $3))
    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE claim_before('history-plans', 'history-plans-t', now(), 2);
PREPARE claim_equal(text, text, timestamptz, int) AS
    SELECT id FROM runs WHERE scope = $1 AND tenant_id = $2
      AND ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $3))
           OR (status = 'running' AND lease_until <= $3))
    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE claim_equal('history-plans', 'history-plans-t', now(), 2);
ROLLBACK;
PREPARE claim_now(text, text, timestamptz, int) AS
    SELECT id FROM runs WHERE scope = $1 AND tenant_id = $2 AND status IN ('queued', 'running')
      AND ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $3))
           OR (status = 'running' AND lease_until <= $3))
    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE claim_now('history-plans', 'history-plans-t', now(), 2);

RESET plan_cache_mode;
DELETE FROM runs WHERE scope = 'history-plans';
ANALYZE runs;
