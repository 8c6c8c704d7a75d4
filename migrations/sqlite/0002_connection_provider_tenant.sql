-- byte8-ledger-core: connections name their provider's organisation.
-- `provider` (already there) is the provider kind (`sage_accounting`, `xero`); a Xero connection
-- also pins the organisation chosen through Xero's connections endpoint (`tenant_id`, sent as
-- `xero-tenant-id`) and keeps where that endpoint is (`connections_url`). Sage connections leave
-- both NULL: their scope is the business id.

ALTER TABLE connections ADD COLUMN tenant_id TEXT;
ALTER TABLE connections ADD COLUMN connections_url TEXT;
