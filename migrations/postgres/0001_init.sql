-- byte8-ledger-core (PostgreSQL): the run queue, its attempts, the cross-reference, connections
-- and the shared per-business rate limits. Same tables and meaning as migrations/sqlite; times
-- are timestamptz (microsecond precision, as the SQLite store's integers). Keys are compared
-- and ordered bytewise (COLLATE "C"), as in SQLite, whatever the database's locale.

CREATE TABLE runs (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope             TEXT COLLATE "C" NOT NULL,
    idempotency_key   TEXT COLLATE "C" NOT NULL,
    event             TEXT,
    magento_entity_id BIGINT,
    -- Bytes, not text: a line that could not be read may hold a NUL, which PostgreSQL text cannot.
    raw               BYTEA       NOT NULL,
    fingerprint       TEXT COLLATE "C",
    policy            TEXT,
    status            TEXT        NOT NULL
        CHECK (status IN ('queued', 'running', 'synced', 'skipped', 'dead_lettered')),
    attempts          BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at   TIMESTAMPTZ,
    lease_until       TIMESTAMPTZ,
    outcome           TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX runs_by_key ON runs (scope, idempotency_key, fingerprint);
-- What claim scans: queued runs by due time, running runs by lease.
CREATE INDEX runs_due ON runs (scope, status, next_attempt_at);
CREATE INDEX runs_leased ON runs (scope, lease_until) WHERE status = 'running';

CREATE TABLE attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      BIGINT      NOT NULL REFERENCES runs (id),
    number      BIGINT      NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    result      TEXT        NOT NULL,
    error_code  TEXT,
    message     TEXT,
    ledger_id   TEXT
);
CREATE INDEX attempts_by_run ON attempts (run_id);

CREATE TABLE xrefs (
    scope      TEXT COLLATE "C" NOT NULL,
    kind       TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    state      TEXT        NOT NULL CHECK (state IN ('intent', 'done')),
    ledger_id  TEXT,
    reference  TEXT,
    meta       TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, kind, key)
);

CREATE TABLE connections (
    scope      TEXT COLLATE "C" PRIMARY KEY,
    provider   TEXT        NOT NULL,
    base_url   TEXT        NOT NULL,
    token_url  TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    tokens     TEXT,
    reference  TEXT
);

-- The shared rate limiter (GCRA): one row per business, its theoretical arrival time in
-- microseconds since the Unix epoch.
CREATE TABLE rate_limits (
    key TEXT COLLATE "C" PRIMARY KEY,
    tat BIGINT NOT NULL
);
