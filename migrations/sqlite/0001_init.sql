-- byte8-ledger-core: the run queue, its attempts, the cross-reference and connections.
-- Times are microseconds since the Unix epoch (UTC).

CREATE TABLE runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    scope             TEXT    NOT NULL,
    idempotency_key   TEXT    NOT NULL,
    event             TEXT,
    magento_entity_id INTEGER,
    raw               TEXT    NOT NULL,
    fingerprint       TEXT,
    policy            TEXT,
    status            TEXT    NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,
    lease_until       INTEGER,
    outcome           TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX runs_by_key ON runs (scope, idempotency_key, fingerprint);
CREATE INDEX runs_due ON runs (scope, status, next_attempt_at);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    number      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    result      TEXT    NOT NULL,
    error_code  TEXT,
    message     TEXT,
    ledger_id   TEXT
);
CREATE INDEX attempts_by_run ON attempts (run_id);

CREATE TABLE xrefs (
    scope      TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    ledger_id  TEXT,
    reference  TEXT,
    meta       TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope, kind, key)
);

CREATE TABLE connections (
    scope        TEXT    PRIMARY KEY,
    provider     TEXT    NOT NULL,
    base_url     TEXT    NOT NULL,
    token_url    TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    tokens       TEXT,
    reference    TEXT
);
