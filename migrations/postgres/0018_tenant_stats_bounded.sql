-- byte8-ledger-core 0018 (PostgreSQL): a tenant's health counters cost the same however many
-- runs it keeps.
--
-- The service's health tile (`DispatchStore::dispatch_stats`: open runs, dead letters of the
-- last day, the newest finished run) counted over every run of the tenant: 44-59 ms with
-- 200,000 runs kept (benches/history_plans.sql). `runs_by_tenant` led with (tenant_id, status)
-- and the business was a filter, so no part of it could be answered by a bounded range or a
-- single entry. With the business second, each part is: the open runs and the day's dead
-- letters a range, the newest run of each finished status one entry read backwards.
--
-- The retention purge's `DELETE FROM runs WHERE tenant_id = $1` and the claims' `tenant_id =`
-- with `status IN ('queued', 'running')` are served as before (the tenant still leads). The same
-- number of indexes.
DROP INDEX runs_by_tenant;
CREATE INDEX runs_by_tenant ON runs (tenant_id, scope, status, updated_at);
