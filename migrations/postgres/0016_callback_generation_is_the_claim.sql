-- byte8-ledger-core 0016 (PostgreSQL; SQLite has the same): a sync-state callback's generation
-- is the claim (`runs.claim`) under which its run finished, instead of a count of the run's
-- finishes. Each finish follows a claim of its own, and claims only grow, so a run finished again
-- still gets a new, larger generation; and the worker that finished the run knows its callback's
-- generation without reading it back: it sends the callback of a run it just finished, while it
-- holds the business's dispatch lease, without claiming it first (one statement fewer an event).
-- Existing rows keep their generations.
CREATE OR REPLACE FUNCTION byte8_runs_terminal_callback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('synced', 'skipped', 'dead_lettered')
        AND NEW.tenant_id IS NOT NULL
        AND EXISTS (SELECT 1 FROM bindings WHERE bindings.tenant_id = NEW.tenant_id AND bindings.scope = NEW.scope
            AND bindings.status = 'active') THEN
        INSERT INTO callbacks (run_id, scope, tenant_id, generation, due_at, attempts, last_error, created_at)
        VALUES (NEW.id, NEW.scope, NEW.tenant_id, NEW.claim, NEW.updated_at, 0, NULL, NEW.updated_at)
        ON CONFLICT (run_id) DO UPDATE SET generation = EXCLUDED.generation, due_at = EXCLUDED.due_at,
            attempts = 0, last_error = NULL, tenant_id = EXCLUDED.tenant_id, delivered_at = NULL;
    END IF;
    RETURN NULL;
END
$$;
