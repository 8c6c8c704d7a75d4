-- byte8-ledger 0007: the operator console (crates/service/src/console).
--
-- `operators`: who may log in to `/console`; `password_hash` is an argon2id PHC string (salt and
-- parameters included), never the password.
-- `console_sessions`: one row per logged-in browser, keyed by the SHA-256 of the session id (the
-- cookie holds the id itself: a copy of this table opens no session). A session ends at
-- `expires_at` (renewed on use, up to `absolute_expires_at`) or at logout.
-- `policy_versions`: every policy a tenant has had through the console, with who and when, so
-- that a previous version can be restored.
-- Times are TIMESTAMPTZ, as elsewhere in this database.

CREATE TABLE operators (
    name          TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE console_sessions (
    id_hash             TEXT PRIMARY KEY NOT NULL,
    operator            TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    created_at          TIMESTAMPTZ NOT NULL,
    expires_at          TIMESTAMPTZ NOT NULL,
    absolute_expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

CREATE TABLE policy_versions (
    tenant_id  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    policy     TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    note       TEXT,
    PRIMARY KEY (tenant_id, version)
);
