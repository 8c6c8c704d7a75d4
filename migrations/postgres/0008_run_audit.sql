-- byte8-ledger-core 0008 (PostgreSQL): the sync runs' audit. Same columns and meaning as
-- migrations/sqlite/0008_run_audit.sql (`exchanges` and `snapshot` are JSON text).

ALTER TABLE attempts ADD COLUMN exchanges TEXT;
ALTER TABLE attempts ADD COLUMN snapshot TEXT;

ALTER TABLE runs ADD COLUMN increment_id TEXT COLLATE "C";
ALTER TABLE runs ADD COLUMN ledger_id TEXT COLLATE "C";
ALTER TABLE runs ADD COLUMN ledger_reference TEXT COLLATE "C";

-- JSON of a stored text or raw event, or NULL when it is not JSON (a line that could not be read).
CREATE FUNCTION pg_temp.byte8_json(t TEXT) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
CREATE FUNCTION pg_temp.byte8_raw_json(b BYTEA) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN convert_from(b, 'UTF8')::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

UPDATE runs SET
    ledger_id = pg_temp.byte8_json(outcome) ->> 'provider_entity_id',
    ledger_reference = pg_temp.byte8_json(outcome) ->> 'provider_reference'
WHERE outcome IS NOT NULL;

UPDATE runs SET increment_id = COALESCE(
    pg_temp.byte8_raw_json(raw) -> 'entity' ->> 'increment_id',
    pg_temp.byte8_raw_json(raw) -> 'payload' ->> 'increment_id'
);

CREATE INDEX runs_listing ON runs (created_at DESC, id DESC);
CREATE INDEX runs_listing_by_scope ON runs (scope, created_at DESC, id DESC);
CREATE INDEX runs_by_increment_id ON runs (increment_id);
CREATE INDEX runs_by_ledger_reference ON runs (ledger_reference);
