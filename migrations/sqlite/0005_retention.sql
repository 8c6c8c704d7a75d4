-- byte8-ledger-core 0005: retention (src/store/retention.rs).
--
-- `bindings.revoked_at`: when the tenant was disconnected (NULL while active; a re-pairing clears
-- it). Everything of a tenant disconnected longer than the retention period is purged.
-- Bindings revoked before this migration take their last change as their disconnect time.
--
-- `callbacks.delivered_at`: a delivered sync-state callback is kept (marked delivered, no longer
-- sent) until the retention period of delivered callbacks has passed; a run finished again
-- replaces its row (the trigger's INSERT OR REPLACE), which is pending again.

ALTER TABLE bindings ADD COLUMN revoked_at INTEGER;
UPDATE bindings SET revoked_at = updated_at WHERE status = 'revoked';

ALTER TABLE callbacks ADD COLUMN delivered_at INTEGER;
DROP INDEX callbacks_due;
CREATE INDEX callbacks_due ON callbacks (scope, tenant_id, delivered_at, due_at);
CREATE INDEX runs_by_tenant ON runs (tenant_id, status, updated_at);
