-- byte8-ledger-core 0010 (PostgreSQL): ledger exchanges kept once per recording, attempt numbers
-- that continue across retries, and the OAuth states used once. Same tables and meaning as
-- migrations/sqlite/0010_exchanges_once.sql.

CREATE TABLE exchanges (
    recording     TEXT COLLATE "C" NOT NULL,
    seq           BIGINT      NOT NULL,
    scope         TEXT COLLATE "C" NOT NULL,
    at            TIMESTAMPTZ NOT NULL,
    method        TEXT        NOT NULL,
    url           TEXT        NOT NULL,
    status        INTEGER,
    request_body  TEXT,
    response_body TEXT,
    error         TEXT,
    PRIMARY KEY (recording, seq)
);
CREATE INDEX exchanges_by_scope_time ON exchanges (scope, at);

ALTER TABLE attempts ADD COLUMN recording TEXT COLLATE "C";
ALTER TABLE attempts ADD COLUMN recording_first BIGINT;
ALTER TABLE attempts ADD COLUMN recording_count BIGINT;
CREATE INDEX attempts_by_recording ON attempts (recording);

-- JSON of a stored text, or NULL when it is not JSON; a time, or NULL when it does not read.
CREATE OR REPLACE FUNCTION pg_temp.byte8_json(t TEXT) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION pg_temp.byte8_time(t TEXT) RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

-- One recording per business and identical exchanges (the runs of a batch each kept a copy);
-- compared by hash first (a B-tree cannot index long texts).
CREATE TEMP TABLE byte8_recordings ON COMMIT DROP AS
SELECT r.scope AS scope, md5(a.exchanges) AS hash, a.exchanges AS exchanges, 'a' || MIN(a.id) AS recording
FROM attempts a JOIN runs r ON r.id = a.run_id
WHERE a.exchanges IS NOT NULL AND jsonb_typeof(pg_temp.byte8_json(a.exchanges)) = 'array'
    AND jsonb_array_length(pg_temp.byte8_json(a.exchanges)) > 0
GROUP BY r.scope, a.exchanges;
CREATE INDEX byte8_recordings_key ON byte8_recordings (scope, hash);

INSERT INTO exchanges (recording, seq, scope, at, method, url, status, request_body, response_body, error)
SELECT g.recording, e.ord - 1, g.scope,
    COALESCE(pg_temp.byte8_time(e.v ->> 'at'), 'epoch'),
    COALESCE(e.v ->> 'method', ''),
    COALESCE(e.v ->> 'url', ''),
    CASE WHEN jsonb_typeof(e.v -> 'status') = 'number' THEN (e.v ->> 'status')::numeric::int END,
    e.v ->> 'request_body',
    e.v ->> 'response_body',
    e.v ->> 'error'
FROM byte8_recordings g,
    jsonb_array_elements(pg_temp.byte8_json(g.exchanges)) WITH ORDINALITY AS e(v, ord);

UPDATE attempts a SET
    recording = g.recording,
    recording_first = 0,
    recording_count = jsonb_array_length(pg_temp.byte8_json(a.exchanges))
FROM runs r, byte8_recordings g
WHERE r.id = a.run_id AND g.scope = r.scope AND g.hash = md5(a.exchanges) AND g.exchanges = a.exchanges;

ALTER TABLE attempts DROP COLUMN exchanges;

-- A recording goes when the last attempt pointing at it does (retention).
CREATE FUNCTION byte8_attempts_drop_exchanges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.recording IS NOT NULL AND NOT EXISTS (SELECT 1 FROM attempts WHERE recording = OLD.recording) THEN
        DELETE FROM exchanges WHERE recording = OLD.recording;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER attempts_drop_exchanges AFTER DELETE ON attempts
    FOR EACH ROW EXECUTE FUNCTION byte8_attempts_drop_exchanges();

ALTER TABLE runs ADD COLUMN attempts_before_retry BIGINT NOT NULL DEFAULT 0;

UPDATE attempts a SET number = n.rn
FROM (SELECT id, row_number() OVER (PARTITION BY run_id ORDER BY id) AS rn FROM attempts) n
WHERE n.id = a.id AND a.number <> n.rn;

UPDATE runs SET
    attempts_before_retry = GREATEST(0, c.n - runs.attempts),
    attempts = GREATEST(runs.attempts, c.n)
FROM (SELECT run_id, COUNT(*) AS n FROM attempts GROUP BY run_id) c
WHERE c.run_id = runs.id;

CREATE TABLE oauth_states_used (
    state_hash TEXT COLLATE "C" PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX oauth_states_used_by_expiry ON oauth_states_used (expires_at);
