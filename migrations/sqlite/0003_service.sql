-- byte8-ledger-core 0003: the ledger service (src/service): tenant bindings, the webhook replay
-- cache shared by every service process, per-business dispatch leases and the sync-state
-- callback outbox. Times are microseconds since the Unix epoch (UTC), except the replay cache's
-- expiry (unix seconds, as the tokens' `exp`).

CREATE TABLE bindings (
    tenant_id                 TEXT    PRIMARY KEY,
    scope                     TEXT    NOT NULL,
    magento_base_url          TEXT    NOT NULL,
    ledger_base_url           TEXT,
    -- AES-256-GCM under LEDGER_MASTER_KEY, bound to the tenant id (`v1:` + base64).
    api_key                   TEXT    NOT NULL,
    policy                    TEXT    NOT NULL,
    status                    TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
    magento_connection_status TEXT    NOT NULL
        CHECK (magento_connection_status IN ('pending', 'active', 'token_revoked')),
    paired_at                 INTEGER NOT NULL,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL
);
CREATE INDEX bindings_by_scope ON bindings (scope, status);
-- One active tenant per business: workers dispatch by business, so two active stores on one
-- business would fetch each other's entities and mix their cross-references.
CREATE UNIQUE INDEX bindings_one_active_per_scope ON bindings (scope) WHERE status = 'active';

-- Webhook `jti`s seen (hex SHA-256 of tenant id and jti) until their token expires.
CREATE TABLE replay_cache (
    key        TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX replay_cache_by_expiry ON replay_cache (expires_at);

-- One worker at a time drains a business's queue.
CREATE TABLE dispatch_leases (
    scope       TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    lease_until INTEGER NOT NULL
);

-- Sync-state callbacks not delivered yet: one row per run, written by the trigger below in the
-- same transaction as the run's terminal status.
CREATE TABLE callbacks (
    run_id     INTEGER PRIMARY KEY REFERENCES runs (id),
    scope      TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    due_at     INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX callbacks_due ON callbacks (scope, due_at);

CREATE TRIGGER runs_terminal_callback AFTER UPDATE OF status ON runs
WHEN NEW.status IN ('synced', 'skipped', 'dead_lettered')
    AND EXISTS (SELECT 1 FROM bindings WHERE bindings.scope = NEW.scope AND bindings.status = 'active')
BEGIN
    INSERT OR REPLACE INTO callbacks (run_id, scope, generation, due_at, attempts, last_error, created_at)
    VALUES (
        NEW.id,
        NEW.scope,
        COALESCE((SELECT generation FROM callbacks WHERE run_id = NEW.id), 0) + 1,
        NEW.updated_at,
        0,
        NULL,
        NEW.updated_at
    );
END;

-- What the status route reads: the runs of one Magento entity.
CREATE INDEX runs_by_entity ON runs (scope, magento_entity_id);
