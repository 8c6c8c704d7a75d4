-- byte8-ledger-core 0005 (PostgreSQL): retention. Same columns and meaning as
-- migrations/sqlite/0005_retention.sql; the outbox trigger also marks a row pending again when
-- its run is finished again.

ALTER TABLE bindings ADD COLUMN revoked_at TIMESTAMPTZ;
UPDATE bindings SET revoked_at = updated_at WHERE status = 'revoked';

ALTER TABLE callbacks ADD COLUMN delivered_at TIMESTAMPTZ;
DROP INDEX callbacks_due;
CREATE INDEX callbacks_due ON callbacks (scope, tenant_id, delivered_at, due_at);
CREATE INDEX runs_by_tenant ON runs (tenant_id, status, updated_at);

CREATE OR REPLACE FUNCTION byte8_runs_terminal_callback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('synced', 'skipped', 'dead_lettered')
        AND NEW.tenant_id IS NOT NULL
        AND EXISTS (SELECT 1 FROM bindings WHERE bindings.tenant_id = NEW.tenant_id AND bindings.scope = NEW.scope
            AND bindings.status = 'active') THEN
        INSERT INTO callbacks (run_id, scope, tenant_id, generation, due_at, attempts, last_error, created_at)
        VALUES (NEW.id, NEW.scope, NEW.tenant_id, 1, NEW.updated_at, 0, NULL, NEW.updated_at)
        ON CONFLICT (run_id) DO UPDATE SET generation = callbacks.generation + 1, due_at = EXCLUDED.due_at,
            attempts = 0, last_error = NULL, tenant_id = EXCLUDED.tenant_id, delivered_at = NULL;
    END IF;
    RETURN NULL;
END
$$;
