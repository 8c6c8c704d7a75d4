-- byte8-ledger-core 0020 (PostgreSQL): a business's claims and health counters read its open runs
-- only, however many finished runs it keeps (a mend of migration 0018).
--
-- Migration 0018 rebuilt `runs_by_tenant` as (tenant_id, scope, status, updated_at) for the
-- health tile's counters. The planner's generic plans (a pooled connection's, after its first
-- few executions) then took that index for a claim (`RunStore::claim_next`, the service's
-- `begin_turn`) and for the tile's count of open runs, with `status IN ('queued', 'running')` as
-- a filter rather than a bound: every entry of the tenant was read. With 200,000 runs kept by
-- one business, 40-118 ms a claim and 40-61 ms a count (benches/history_plans.sql), growing with
-- the history; the service under load (auto_explain) showed the same plan. Which index a generic
-- plan takes follows the table's statistics, so a new index beside it is not enough: the one the
-- planner must not take for an open run has to hold none.
--
-- - `runs_open` (0009: `next_attempt_at` of the open runs, for the workers' look for due tenants)
--   becomes (tenant_id, scope, id) of the open runs: a claim or a count reads the business's open
--   runs in order of id (a claim stops after its `limit + 1` due ones), and
--   `DispatchStore::due_tenants` reads it whole as before (its condition is on several columns, so
--   `next_attempt_at` first bounded nothing).
-- - `runs_by_tenant` keeps its columns and holds the finished runs only: the tile's dead letters
--   of the day and newest run of each finished status are ranges of it as before.
-- - The retention purge asks a tenant's runs as its open ones or its finished ones, each arm one
--   of the two indexes.
--
-- The same number of indexes, and fewer entries: a run is in `runs_by_tenant` once it is
-- finished, in `runs_open` while it is not.
DROP INDEX runs_open;
CREATE INDEX runs_open ON runs (tenant_id, scope, id) WHERE status IN ('queued', 'running');
DROP INDEX runs_by_tenant;
CREATE INDEX runs_by_tenant ON runs (tenant_id, scope, status, updated_at)
    WHERE status IN ('synced', 'skipped', 'dead_lettered');
