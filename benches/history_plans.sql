-- What the queue's look-ups cost on PostgreSQL when a business keeps a long history
-- (BENCHMARKS.md, "A queue that does not slow down with history"). Run against a test or bench
-- database the store has migrated (not one in use: the "before" plans are taken with the
-- indexes as they were, rebuilt inside a transaction that is rolled back, which locks `runs`
-- meanwhile), e.g.:
--
--   psql 'postgres://postgres@localhost/byte8_bench?host=/work/pg' -f benches/history_plans.sql
--
-- It adds 200,000 synced runs for business `history-plans` (one tenant), prints the generic plans
-- (what a pooled connection or a PL/pgSQL function runs after its first executions) with their
-- timings, and removes the runs again: the look-ups as they were before migration 0017 (its
-- indexes undone inside a transaction that is rolled back), then as they are now.

INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status,
                  attempts, created_at, updated_at, tenant_id, claim)
SELECT 'history-plans', 'invoice.created:' || g, 'invoice.created', g, '\x7b7d'::bytea, 'fp' || g, '{}',
       'synced', 1, now() - interval '30 days', now() - interval '30 days', 'history-plans-t', 1
FROM generate_series(1, 200000) AS g;
ANALYZE runs;
SET plan_cache_mode = force_generic_plan;

-- Before migration 0017 (its indexes as they were, inside a transaction rolled back below).
BEGIN;
DROP INDEX runs_by_key;
CREATE INDEX runs_by_key ON runs (scope, tenant_id, idempotency_key, fingerprint);
DROP INDEX runs_by_entity;
CREATE INDEX runs_by_entity ON runs (scope, tenant_id, magento_entity_id);
DROP INDEX runs_due;
CREATE INDEX runs_due ON runs (scope, tenant_id, status, next_attempt_at);

-- The enqueue's look-up of a key (byte8_enqueue): `IS NOT DISTINCT FROM` (every entry of the
-- business read).
PREPARE key_before(text, text, text) AS
    SELECT id, status FROM runs WHERE scope = $1 AND idempotency_key = $3 AND tenant_id IS NOT DISTINCT FROM $2
    ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE key_before('history-plans', 'history-plans-t', 'invoice.created:0');

-- A claim's candidates (RunStore::claim_next, the service's begin_turn): `IS NOT DISTINCT FROM`
-- (every `runs_due` entry of the business read) and `=` (left to the planner's estimates, which
-- take an index on (scope, tenant_id) alone: the tenant's whole history read).
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
DEALLOCATE ALL;

-- Now: the key's runs in `runs_by_key` (scope, idempotency_key, tenant_id, id), the tenant's open
-- runs in `runs_by_tenant` (tenant_id, status, ...) or `runs_due` (scope, status, tenant_id, ...).
PREPARE key_now(text, text, text) AS
    SELECT id, status FROM runs WHERE scope = $1 AND tenant_id = $2 AND idempotency_key = $3
    ORDER BY id DESC LIMIT 1 FOR NO KEY UPDATE;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE key_now('history-plans', 'history-plans-t', 'invoice.created:0');
PREPARE claim_now(text, text, timestamptz, int) AS
    SELECT id FROM runs WHERE scope = $1 AND tenant_id = $2 AND status IN ('queued', 'running')
      AND ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $3))
           OR (status = 'running' AND lease_until <= $3))
    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE claim_now('history-plans', 'history-plans-t', now(), 2);
PREPARE claim_now_untenanted(text, text, timestamptz, int) AS
    SELECT id FROM runs WHERE scope = $1 AND tenant_id IS NULL AND $2::text IS NULL AND status IN ('queued', 'running')
      AND ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $3))
           OR (status = 'running' AND lease_until <= $3))
    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE claim_now_untenanted('history-plans', NULL, now(), 2);

RESET plan_cache_mode;
DELETE FROM runs WHERE scope = 'history-plans';
ANALYZE runs;
