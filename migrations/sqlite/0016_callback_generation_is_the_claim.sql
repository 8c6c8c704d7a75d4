-- byte8-ledger-core 0016: a sync-state callback's generation is the claim (`runs.claim`) under
-- which its run finished, instead of a count of the run's finishes. Each finish follows a claim
-- of its own, and claims only grow, so a run finished again still gets a new, larger generation;
-- and the worker that finished the run knows its callback's generation without reading it back
-- (see migrations/postgres/0016_callback_generation_is_the_claim.sql). Existing rows keep their
-- generations.
DROP TRIGGER runs_terminal_callback;
CREATE TRIGGER runs_terminal_callback AFTER UPDATE OF status ON runs
WHEN NEW.status IN ('synced', 'skipped', 'dead_lettered')
    AND NEW.tenant_id IS NOT NULL
    AND EXISTS (SELECT 1 FROM bindings WHERE bindings.tenant_id = NEW.tenant_id AND bindings.scope = NEW.scope
        AND bindings.status = 'active')
BEGIN
    INSERT OR REPLACE INTO callbacks (run_id, scope, tenant_id, generation, due_at, attempts, last_error, created_at)
    VALUES (NEW.id, NEW.scope, NEW.tenant_id, NEW.claim, NEW.updated_at, 0, NULL, NEW.updated_at);
END;
