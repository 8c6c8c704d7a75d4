-- byte8-ledger-core 0018 (SQLite): a tenant's health counters cost the same however many
-- runs it keeps (see migrations/postgres/0018_tenant_stats_bounded.sql).
--
-- The service's health tile (`DispatchStore::dispatch_stats`: open runs, dead letters of the
-- last day, the newest finished run) counted over every run of the tenant. `runs_by_tenant` led
-- with (tenant_id, status) and the business was a filter; with the business second, the open
-- runs and the day's dead letters are a range each, and the newest run of each finished status
-- one entry read backwards.
--
-- The retention purge's `DELETE FROM runs WHERE tenant_id = ?` is served as before (the tenant
-- still leads). The same number of indexes.
DROP INDEX runs_by_tenant;
CREATE INDEX runs_by_tenant ON runs (tenant_id, scope, status, updated_at);
