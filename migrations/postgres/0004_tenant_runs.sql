-- byte8-ledger-core 0004 (PostgreSQL): tenants stay apart, and a run's result is fenced by its
-- claim. Same columns and meaning as migrations/sqlite/0004_tenant_runs.sql.

ALTER TABLE runs ADD COLUMN tenant_id TEXT COLLATE "C";
ALTER TABLE runs ADD COLUMN claim BIGINT NOT NULL DEFAULT 0;

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

ALTER TABLE callbacks ADD COLUMN tenant_id TEXT COLLATE "C";
UPDATE callbacks SET tenant_id = (SELECT runs.tenant_id FROM runs WHERE runs.id = callbacks.run_id);
DELETE FROM callbacks WHERE tenant_id IS NULL;
DROP INDEX callbacks_due;
CREATE INDEX callbacks_due ON callbacks (scope, tenant_id, due_at);

CREATE OR REPLACE FUNCTION byte8_runs_terminal_callback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('synced', 'skipped', 'dead_lettered')
        AND NEW.tenant_id IS NOT NULL
        AND EXISTS (SELECT 1 FROM bindings WHERE bindings.tenant_id = NEW.tenant_id AND bindings.scope = NEW.scope
            AND bindings.status = 'active') THEN
        INSERT INTO callbacks (run_id, scope, tenant_id, generation, due_at, attempts, last_error, created_at)
        VALUES (NEW.id, NEW.scope, NEW.tenant_id, 1, NEW.updated_at, 0, NULL, NEW.updated_at)
        ON CONFLICT (run_id) DO UPDATE SET generation = callbacks.generation + 1, due_at = EXCLUDED.due_at,
            attempts = 0, last_error = NULL, tenant_id = EXCLUDED.tenant_id;
    END IF;
    RETURN NULL;
END
$$;
