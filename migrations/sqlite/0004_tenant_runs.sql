-- byte8-ledger-core 0004: tenants stay apart, and a run's result is fenced by its claim.
--
-- `runs.tenant_id`: the service tenant (paired Magento store) whose webhook queued the run; NULL
-- for the `sync` command's runs. Deduplication, claiming, the callback outbox and the status route
-- filter by it, so that a business paired to a new tenant never processes, reports or shows the
-- old tenant's runs.
--
-- `runs.claim`: the claim generation, incremented by every claim; finishing a run requires the
-- generation the claim returned (a worker whose lease lapsed cannot overwrite the result of the
-- worker that took over).
--
-- Existing runs are given the tenant bound to their business when they were received: the one
-- paired most recently at or before the run, else the first paired. (A business keeps only each
-- tenant's latest pairing time, so a run older than every pairing goes to the first tenant.)
-- Runs of a business no tenant was ever bound to (the `sync` command's) keep NULL.

ALTER TABLE runs ADD COLUMN tenant_id TEXT;
ALTER TABLE runs ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;

UPDATE runs SET tenant_id = COALESCE(
    (SELECT b.tenant_id FROM bindings b WHERE b.scope = runs.scope AND b.paired_at <= runs.created_at
        ORDER BY b.paired_at DESC, b.tenant_id LIMIT 1),
    (SELECT b.tenant_id FROM bindings b WHERE b.scope = runs.scope ORDER BY b.paired_at, b.tenant_id LIMIT 1)
);

DROP INDEX runs_by_key;
CREATE INDEX runs_by_key ON runs (scope, tenant_id, idempotency_key, fingerprint);
DROP INDEX runs_due;
CREATE INDEX runs_due ON runs (scope, tenant_id, status, next_attempt_at);
DROP INDEX runs_by_entity;
CREATE INDEX runs_by_entity ON runs (scope, tenant_id, magento_entity_id);

-- The outbox row names the run's tenant; only that tenant's worker sends it.
ALTER TABLE callbacks ADD COLUMN tenant_id TEXT;
UPDATE callbacks SET tenant_id = (SELECT runs.tenant_id FROM runs WHERE runs.id = callbacks.run_id);
-- A callback whose run has no tenant can never be sent to anyone.
DELETE FROM callbacks WHERE tenant_id IS NULL;
DROP INDEX callbacks_due;
CREATE INDEX callbacks_due ON callbacks (scope, tenant_id, due_at);

-- A terminal run queues its callback only when its own tenant is active on its business.
DROP TRIGGER runs_terminal_callback;
CREATE TRIGGER runs_terminal_callback AFTER UPDATE OF status ON runs
WHEN NEW.status IN ('synced', 'skipped', 'dead_lettered')
    AND NEW.tenant_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM bindings WHERE bindings.tenant_id = NEW.tenant_id AND bindings.scope = NEW.scope
        AND bindings.status = 'active')
BEGIN
    INSERT OR REPLACE INTO callbacks (run_id, scope, tenant_id, generation, due_at, attempts, last_error, created_at)
    VALUES (
        NEW.id,
        NEW.scope,
        NEW.tenant_id,
        COALESCE((SELECT generation FROM callbacks WHERE run_id = NEW.id), 0) + 1,
        NEW.updated_at,
        0,
        NULL,
        NEW.updated_at
    );
END;
