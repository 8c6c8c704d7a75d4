-- What the service's workers look for on each pass (`DispatchStore::due_tenants`): open runs and
-- undelivered callbacks only, so that the read does not grow with the history kept. (The shared
-- rate limiter's window of the PostgreSQL migration 0009 has no SQLite counterpart: one process
-- keeps its limiter in memory.)
CREATE INDEX runs_open ON runs (next_attempt_at) WHERE status IN ('queued', 'running');
CREATE INDEX callbacks_undelivered ON callbacks (due_at) WHERE delivered_at IS NULL;
