-- The shared rate limiter's sliding window (`http::limit::Window`): the permit times of the
-- business's last L requests, oldest first, in microseconds since the Unix epoch, beside the
-- GCRA's theoretical arrival time (`tat`) that paces them.
ALTER TABLE rate_limits ADD COLUMN recent BIGINT[] NOT NULL DEFAULT '{}';

-- What the service's workers look for on each pass (`DispatchStore::due_tenants`): open runs and
-- undelivered callbacks only, so that the read does not grow with the history kept.
CREATE INDEX runs_open ON runs (next_attempt_at) WHERE status IN ('queued', 'running');
CREATE INDEX callbacks_undelivered ON callbacks (due_at) WHERE delivered_at IS NULL;
