-- byte8-ledger-core 0008: the sync runs' audit (src/store/audit.rs, src/http/exchange.rs).
--
-- `attempts.exchanges`: the attempt's requests to the ledger and their answers, as a JSON array
-- (method, path and query, status, bodies; secrets redacted, headers never kept, bodies cut).
-- `attempts.snapshot`: the canonical entity the attempt worked on, as JSON (a run's page shows
-- an upsert's changes since the previous run of the same entity). Both NULL for older attempts.
--
-- `runs.increment_id`, `runs.ledger_id`, `runs.ledger_reference`: what the runs table searches
-- by. The increment id is read from the event (`entity.increment_id`, else
-- `payload.increment_id`) when it is queued, else from the first snapshot that has one; the
-- ledger id and document number are copied from each outcome. Existing runs are filled in from
-- their raw event and stored outcome where those are JSON.

ALTER TABLE attempts ADD COLUMN exchanges TEXT;
ALTER TABLE attempts ADD COLUMN snapshot TEXT;

ALTER TABLE runs ADD COLUMN increment_id TEXT;
ALTER TABLE runs ADD COLUMN ledger_id TEXT;
ALTER TABLE runs ADD COLUMN ledger_reference TEXT;

UPDATE runs SET
    ledger_id = CAST(json_extract(outcome, '$.provider_entity_id') AS TEXT),
    ledger_reference = CAST(json_extract(outcome, '$.provider_reference') AS TEXT)
WHERE outcome IS NOT NULL AND json_valid(outcome);

UPDATE runs SET increment_id = CAST(COALESCE(
    json_extract(raw, '$.entity.increment_id'),
    json_extract(raw, '$.payload.increment_id')
) AS TEXT)
WHERE json_valid(raw) AND json_type(raw) = 'object';

-- The runs table: newest first, by business or across every business.
CREATE INDEX runs_listing ON runs (created_at DESC, id DESC);
CREATE INDEX runs_listing_by_scope ON runs (scope, created_at DESC, id DESC);
CREATE INDEX runs_by_increment_id ON runs (increment_id);
CREATE INDEX runs_by_ledger_reference ON runs (ledger_reference);
