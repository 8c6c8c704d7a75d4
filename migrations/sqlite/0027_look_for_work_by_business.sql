-- byte8-ledger-core 0027 (SQLite): the service's look for work reads an entry or two of each
-- business with work waiting, not every run and callback waiting (PostgreSQL's look does since
-- migrations 0020 and 0026).
--
-- `DispatchStore::due_tenants` (every `serve` process, once a second) read every open run through
-- `runs_open` (next_attempt_at) and every undelivered callback through `callbacks_undelivered`
-- (due_at): a back-fill of 100,000 queued runs, or a store whose Magento has been down for a day,
-- was read in full every second. It now lists the businesses with open runs and those with
-- undelivered callbacks by a loose index scan (each step takes the first entry after the last
-- business found) of the two indexes below, ordered by business; then, for each business whose
-- dispatch lease is free, looks for one due run (through `runs_due`: scope, tenant_id, status,
-- next_attempt_at) or one due callback (through `callbacks_waiting`). The old indexes served
-- that statement only, so they go: the same number of indexes.
DROP INDEX runs_open;
CREATE INDEX runs_open ON runs (tenant_id, scope, status) WHERE status IN ('queued', 'running');
DROP INDEX callbacks_undelivered;
CREATE INDEX callbacks_waiting ON callbacks (scope, tenant_id, due_at, delivered_at) WHERE delivered_at IS NULL;
