-- What the queue's look-ups cost on PostgreSQL when a business keeps a long history
-- (BENCHMARKS.md, "A queue that does not slow down with history"). Run against a test or bench
-- database the store has migrated (not one in use: the "before" plans are taken with the
-- indexes as they were, rebuilt inside a transaction that is rolled back, which locks `runs`
-- meanwhile), e.g.:
--
--   psql 'postgres://postgres@localhost/byte8_bench?host=/work/pg' -f benches/history_plans.sql
--
-- It adds 200,000 runs for business `history-plans` (one tenant), queued and then synced, 20 for
-- each of 1,000 others (70 of them open), prints the generic plans
-- (what a pooled connection or a PL/pgSQL function runs after its first executions) with their
-- timings, and removes the runs again: the look-ups as they were before migration 0017 (its
-- indexes undone inside a transaction that is rolled back), then as they are now, then before
-- migration 0022 (without its statistics), then between migrations 0018 and 0020 (`runs_open`
-- as 0009 made it); then the health tile's counters before migration 0018 and now.

INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status,
                  attempts, created_at, updated_at, tenant_id, claim, next_attempt_at)
SELECT 'history-plans', 'invoice.created:' || g, 'invoice.created', g, '\x7b7d'::bytea, 'fp' || g, '{}',
       'queued', 1, now() - interval '30 days', now() - interval '30 days', 'history-plans-t', 1,
       now() + interval '1 day'
FROM generate_series(1, 200000) AS g;
-- Every finished run was once open: that churn leaves `runs_open` many pages for its few entries
-- (128 pages for 81 open runs in the bench's database), which is what made a scope-led index look
-- cheaper before migration 0022.
UPDATE runs SET status = 'synced', next_attempt_at = NULL WHERE scope = 'history-plans';
VACUUM runs;
-- And a node's other businesses, 1,000 of them with 20 runs each, one store each, 70 of those runs
-- open and waiting a day (a node is rarely without a few), so that the planner's statistics (from
-- which a generic plan's choice of index follows) are a node's whatever else the database holds.
INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status,
                  attempts, created_at, updated_at, tenant_id, claim, next_attempt_at)
SELECT 'history-plans-' || (g % 1000), 'product.upserted:' || g, 'product.upserted', g, '\x7b7d'::bytea,
       'fp' || g, '{}', CASE WHEN g <= 70 THEN 'queued' ELSE 'synced' END, 1, now(), now(),
       'history-plans-t' || (g % 1000), 1, CASE WHEN g <= 70 THEN now() + interval '1 day' END
FROM generate_series(1, 20000) AS g;
ANALYZE runs;
SET plan_cache_mode = force_generic_plan;
-- The indexes as they were, put back inside the transactions below (each rolled back): before
-- migration 0022 (no statistics on (scope, tenant_id), `runs_due` for `runs_by_status`), and
-- between migrations 0018 and 0020 (`runs_open` as 0009 made it, `runs_by_tenant` of every run).
\set before_0022 'DROP STATISTICS runs_scope_tenant; DROP INDEX runs_by_status; CREATE INDEX runs_due ON runs (scope, status, tenant_id, next_attempt_at); ANALYZE runs;'
\set between_0018_and_0020 'DROP INDEX runs_open; CREATE INDEX runs_open ON runs (next_attempt_at) WHERE status IN (''queued'', ''running''); DROP INDEX runs_by_tenant; CREATE INDEX runs_by_tenant ON runs (tenant_id, scope, status, updated_at);'

-- Before migration 0017 (its indexes as they were, and without 0022's statistics, inside a
-- transaction rolled back below).
BEGIN;
DROP STATISTICS runs_scope_tenant;
ANALYZE runs;
DROP INDEX runs_by_key;
CREATE INDEX runs_by_key ON runs (scope, tenant_id, idempotency_key, fingerprint);
DROP INDEX runs_by_entity;
CREATE INDEX runs_by_entity ON runs (scope, tenant_id, magento_entity_id);
DROP INDEX runs_by_status;
CREATE INDEX runs_due ON runs (scope, tenant_id, status, next_attempt_at);
-- and `runs_by_tenant` as it was before 0018 (its (tenant_id, scope, status, …) serves a claim).
DROP INDEX runs_by_tenant;
CREATE INDEX runs_by_tenant ON runs (tenant_id, status, updated_at);
-- and `runs_open` as 0009 made it (before 0020).
DROP INDEX runs_open;
CREATE INDEX runs_open ON runs (next_attempt_at) WHERE status IN ('queued', 'running');

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
-- runs in `runs_open` (tenant_id, scope, id) of the open runs only (0020; `runs_by_tenant` holds
-- the finished runs only since then, so no plan can read the history for an open run), or in
-- `runs_by_status` (status, scope, id) (0022).
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

-- Before migration 0022: without statistics on (scope, tenant_id) together, the planner takes the
-- two for independent and estimates a business's runs at under one row for any index they lead,
-- so a scope-led index can look as cheap as `runs_open`; and `runs_due` was (scope, status,
-- tenant_id, next_attempt_at), which such a plan read with the statuses as a filter (0022 makes
-- it `runs_by_status` (status, scope, id)). The same prepared statement, planned again without
-- the statistics and with `runs_due` (inside a transaction rolled back).
BEGIN;
:before_0022
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE claim_now('history-plans', 'history-plans-t', now(), 2);
ROLLBACK;

-- Between migrations 0018 and 0020: `runs_open` was (next_attempt_at) and `runs_by_tenant` held
-- every run, and the generic plan took
-- `runs_by_tenant` (tenant_id, scope, status, updated_at) with the statuses as a filter: every
-- run of the tenant read. The same prepared statement, planned again against the indexes as they
-- were (inside a transaction rolled back).
BEGIN;
:before_0022
:between_0018_and_0020
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE claim_now('history-plans', 'history-plans-t', now(), 2);
ROLLBACK;

-- The health tile's counters (the service's `dispatch_stats`): before migration 0018, one pass
-- over every run of the tenant (`runs_by_tenant` was (tenant_id, status, updated_at), the
-- business a filter); inside a transaction rolled back, with that index as it was.
BEGIN;
:before_0022
DROP INDEX runs_by_tenant;
CREATE INDEX runs_by_tenant ON runs (tenant_id, status, updated_at);
DROP INDEX runs_open;
CREATE INDEX runs_open ON runs (next_attempt_at) WHERE status IN ('queued', 'running');
PREPARE stats_before(text, timestamptz, text) AS
    SELECT COUNT(*) FILTER (WHERE status IN ('queued', 'running')) AS pending,
           COUNT(*) FILTER (WHERE status = 'dead_lettered' AND updated_at >= $2) AS failed,
           MAX(updated_at) FILTER (WHERE status IN ('synced', 'skipped', 'dead_lettered')) AS last_run_at
    FROM runs WHERE scope = $1 AND tenant_id = $3;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE stats_before('history-plans', now() - interval '1 day', 'history-plans-t');
ROLLBACK;
DEALLOCATE ALL;

-- Now (0018: `runs_by_tenant` (tenant_id, scope, status, updated_at), of the finished runs since
-- 0020; 0020: `runs_open` (tenant_id, scope, id) of the open runs): the open runs and the day's dead letters are
-- ranges, the newest run of each finished status one entry read backwards. First between 0018
-- and 0020 (`runs_open` as 0009 made it, `runs_by_tenant` of every run: the open runs counted
-- through `runs_by_tenant` with the statuses a filter, every run of the tenant read), then now.
PREPARE stats_now(text, timestamptz, text) AS
    SELECT (SELECT COUNT(*) FROM runs WHERE tenant_id = $3 AND scope = $1 AND status IN ('queued', 'running')) AS pending,
           (SELECT COUNT(*) FROM runs WHERE tenant_id = $3 AND scope = $1 AND status = 'dead_lettered'
             AND updated_at >= $2) AS failed,
           GREATEST(
             (SELECT updated_at FROM runs WHERE tenant_id = $3 AND scope = $1 AND status = 'synced'
               ORDER BY updated_at DESC LIMIT 1),
             (SELECT updated_at FROM runs WHERE tenant_id = $3 AND scope = $1 AND status = 'skipped'
               ORDER BY updated_at DESC LIMIT 1),
             (SELECT updated_at FROM runs WHERE tenant_id = $3 AND scope = $1 AND status = 'dead_lettered'
               ORDER BY updated_at DESC LIMIT 1)) AS last_run_at;
BEGIN;
:before_0022
:between_0018_and_0020
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE stats_now('history-plans', now() - interval '1 day', 'history-plans-t');
ROLLBACK;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE stats_now('history-plans', now() - interval '1 day', 'history-plans-t');

RESET plan_cache_mode;
DELETE FROM runs WHERE scope = 'history-plans' OR scope LIKE 'history-plans-%';
ANALYZE runs;
