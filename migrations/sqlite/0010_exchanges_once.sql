-- byte8-ledger-core 0010: ledger exchanges kept once per recording, attempt numbers that continue
-- across retries, and the OAuth states used once (src/store/audit.rs, src/http/audit.rs,
-- crates/service/src/console/oauth.rs).
--
-- `exchanges`: every ledger request a run's attempt made, with its answer (redacted as
-- migration 0008 describes), one row per request, keyed by its recording (an attempt's, or the
-- one shared by the runs of a batch: Xero posts up to 50 invoices in one request) and its number
-- in it. The runs of a batch point at the same rows, so each request is kept and counted once;
-- `exchanges_by_scope_time` serves the console's count of a business's requests in the last hour.
-- An attempt points at its exchanges with `recording`, `recording_first`, `recording_count`
-- (the attempt saw `recording_count` exchanges from number `recording_first`).
--
-- Existing attempts' `exchanges` JSON moves there: attempts of the same business whose
-- exchanges were identical (the runs of one batch each kept a full copy) share one recording,
-- named `a` and the id of the first of them; then the column is dropped.
--
-- `runs.attempts_before_retry`: the attempts made before an operator's last retry. A retry no
-- longer resets `runs.attempts`, so attempt numbers continue across retries; the engine's
-- retry ladder and `max_attempts` count from `attempts_before_retry`. Existing attempts are
-- numbered again in order (they restarted at 1 after each retry), and each run's `attempts`
-- becomes the number of its kept attempts where that is more, the difference going to
-- `attempts_before_retry`.
--
-- `oauth_states_used`: the OAuth `state` values a callback has accepted (SHA-256 hex), until
-- they expire: a state replayed to another `serve` process sharing the database is refused.

CREATE TABLE exchanges (
    recording     TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    scope         TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    method        TEXT    NOT NULL,
    url           TEXT    NOT NULL,
    status        INTEGER,
    request_body  TEXT,
    response_body TEXT,
    error         TEXT,
    PRIMARY KEY (recording, seq)
);
CREATE INDEX exchanges_by_scope_time ON exchanges (scope, at);

ALTER TABLE attempts ADD COLUMN recording TEXT;
ALTER TABLE attempts ADD COLUMN recording_first INTEGER;
ALTER TABLE attempts ADD COLUMN recording_count INTEGER;
CREATE INDEX attempts_by_recording ON attempts (recording);

CREATE TEMP TABLE byte8_recordings AS
SELECT r.scope AS scope, a.exchanges AS exchanges, 'a' || MIN(a.id) AS recording
FROM attempts a JOIN runs r ON r.id = a.run_id
WHERE a.exchanges IS NOT NULL AND json_valid(a.exchanges) AND json_type(a.exchanges) = 'array'
    AND json_array_length(a.exchanges) > 0
GROUP BY r.scope, a.exchanges;
CREATE INDEX temp.byte8_recordings_key ON byte8_recordings (scope, exchanges);

INSERT INTO exchanges (recording, seq, scope, at, method, url, status, request_body, response_body, error)
SELECT g.recording, CAST(e.key AS INTEGER), g.scope,
    -- RFC 3339 (`2026-03-02T09:00:00.123456Z`, as the crate wrote it) to microseconds, exactly:
    -- the whole seconds, then up to six digits of the fraction.
    COALESCE(
        CAST(strftime('%s', json_extract(e.value, '$.at')) AS INTEGER) * 1000000
        + CASE WHEN instr(json_extract(e.value, '$.at'), '.') > 0 THEN CAST(substr(
            rtrim(substr(json_extract(e.value, '$.at'), instr(json_extract(e.value, '$.at'), '.') + 1), 'Z')
            || '000000', 1, 6) AS INTEGER) ELSE 0 END,
        0),
    COALESCE(json_extract(e.value, '$.method'), ''),
    COALESCE(json_extract(e.value, '$.url'), ''),
    CASE WHEN json_type(e.value, '$.status') = 'integer' THEN json_extract(e.value, '$.status') END,
    json_extract(e.value, '$.request_body'),
    json_extract(e.value, '$.response_body'),
    json_extract(e.value, '$.error')
FROM byte8_recordings g, json_each(g.exchanges) e;

UPDATE attempts SET
    recording = (SELECT g.recording FROM byte8_recordings g JOIN runs r ON r.scope = g.scope
        WHERE r.id = attempts.run_id AND g.exchanges = attempts.exchanges),
    recording_first = 0,
    recording_count = json_array_length(exchanges)
WHERE exchanges IS NOT NULL AND json_valid(exchanges) AND json_type(exchanges) = 'array'
    AND json_array_length(exchanges) > 0;

DROP TABLE byte8_recordings;
ALTER TABLE attempts DROP COLUMN exchanges;

-- A recording goes when the last attempt pointing at it does (retention).
CREATE TRIGGER attempts_drop_exchanges AFTER DELETE ON attempts
WHEN OLD.recording IS NOT NULL AND NOT EXISTS (SELECT 1 FROM attempts WHERE recording = OLD.recording)
BEGIN
    DELETE FROM exchanges WHERE recording = OLD.recording;
END;

ALTER TABLE runs ADD COLUMN attempts_before_retry INTEGER NOT NULL DEFAULT 0;

UPDATE attempts SET number = (SELECT COUNT(*) FROM attempts b WHERE b.run_id = attempts.run_id AND b.id <= attempts.id);

UPDATE runs SET
    attempts_before_retry = MAX(0, (SELECT COUNT(*) FROM attempts a WHERE a.run_id = runs.id) - attempts),
    attempts = MAX(attempts, (SELECT COUNT(*) FROM attempts a WHERE a.run_id = runs.id))
WHERE EXISTS (SELECT 1 FROM attempts a WHERE a.run_id = runs.id);

CREATE TABLE oauth_states_used (
    state_hash TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX oauth_states_used_by_expiry ON oauth_states_used (expires_at);
