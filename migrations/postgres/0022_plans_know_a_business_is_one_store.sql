-- byte8-ledger-core 0022 (PostgreSQL): the planner knows that a business's runs and callbacks
-- are one store's, and `runs` is indexed by status before business, so that no generic plan reads
-- a business's history to find its open runs; a turn's look for undelivered callbacks reads the
-- business's own only. Three indexes go: two that served no statement, and one whose reader
-- another index serves.
--
-- Runs. A claim (`RunStore::claim_next`, the service's `begin_turn`) asks `scope = $1 AND
-- tenant_id = $5` and the open statuses. Without statistics on the two columns together, the
-- planner multiplies their selectivities: one business among a thousand times one store among a
-- thousand is a millionth of the table, under one row, for any index with (scope, tenant_id) in
-- its first columns. Every such index then looks as cheap as `runs_open`, which holds only the
-- open runs, and a bloated `runs_open` (128 pages for 81 open runs after a day of queue churn in
-- the bench's database) looks dearer. The generic plan took `runs_due` with the statuses as a
-- filter: 200,184 finished runs read and dropped, 42-54 ms a claim, with 200,000 runs kept by one
-- business (`bench_service --history 200000`). Dropping `runs_due` is not enough: the plan then
-- takes `runs_by_key` or `runs_by_entity`, the same way.
--
-- Functional-dependency statistics say that a business's runs belong to one store (the service
-- binds a business to one active store at a time; the core's CLI has no store). The planner then
-- estimates `scope = $1 AND tenant_id = $5` as one business's share of the table (its rows over
-- its businesses): a scope-led index costs a business's average history, `runs_open` its open
-- runs. The estimate of the wrong plan grows with the history it would read. The generic plan
-- reads `runs_open` (tests/core/postgres.rs builds a node like the bench's in a database of its
-- own and checks the claim's plan).
--
-- `runs_due` (scope, status, tenant_id, next_attempt_at) stayed a trap with the statistics: a
-- plan could take it with (scope, tenant_id) as bounds and the statuses as a filter, an
-- index-only scan the planner costs as cheap (the health tile's count of open runs did, in a test
-- database built like the bench's, on some of `ANALYZE`'s samples: 20,000 entries read). It
-- becomes `runs_by_status` (status, scope, id): whatever reads it by business reads it by status
-- first, so a claim or a count of open runs reads the business's open runs only, and the dead
-- letters, the runs waiting to retry and the oldest queued run (the console's, the command's)
-- are each a range of it. `RunStore::counts` asks it one status at a time.
--
-- `runs_by_increment_id` (increment_id) and `runs_by_ledger_reference` (ledger_reference) go: no
-- statement can use them (the console's search compares `translate(column, …)`, which a plain
-- index on the column does not serve; `pg_stat_user_indexes` counted 0 scans of each in the
-- bench's database), and a run's insert, claim and finish each wrote an entry in both.
-- `runs_leased` (scope, lease_until) of the running runs goes too: its one reader, the release
-- of a business's leases when a worker starts (`RunStore::release_leases`: `scope = $2 AND status
-- = 'running'`), is a range of `runs_by_status`, and each claim wrote an entry in it.
--
-- Callbacks. `begin_turn` asks whether the business has undelivered callbacks due, the callback
-- claim takes them in order of `due_at`, the health tile counts them. `callbacks_due` (scope,
-- tenant_id, delivered_at, due_at) held every callback ever delivered too, and was written at
-- each delivery; beside it, `callbacks_undelivered` (`due_at` of every business's undelivered
-- callbacks) is small, and plans in the shared test database took it with the business as a
-- filter: a store whose Magento is down piles up undelivered callbacks, and every other
-- business's turn read them. `callbacks_due` becomes (scope, tenant_id, due_at, run_id) of the
-- undelivered callbacks only: a business's own, in the claim's order, bounded by `due_at`, and no
-- bigger than `callbacks_undelivered`. A delivered callback leaves it, so a delivery writes one
-- index entry fewer. `callbacks_undelivered` stays for the workers' look for due tenants, which
-- reads every business's due callbacks by `due_at`.
CREATE STATISTICS runs_scope_tenant (dependencies) ON scope, tenant_id FROM runs;
CREATE STATISTICS callbacks_scope_tenant (dependencies) ON scope, tenant_id FROM callbacks;
DROP INDEX runs_due;
CREATE INDEX runs_by_status ON runs (status, scope, id);
DROP INDEX runs_by_increment_id;
DROP INDEX runs_by_ledger_reference;
DROP INDEX runs_leased;
DROP INDEX callbacks_due;
CREATE INDEX callbacks_due ON callbacks (scope, tenant_id, due_at, run_id) WHERE delivered_at IS NULL;
ANALYZE runs;
ANALYZE callbacks;
