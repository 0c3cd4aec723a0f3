-- Incoming webhooks, stored durably before they are acknowledged, then processed from here.
CREATE TABLE inbound_webhooks (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    connection_id     TEXT NOT NULL,
    received_at       INTEGER NOT NULL,
    source_ip         TEXT,
    headers           TEXT NOT NULL,                      -- JSON object; credential-like values masked
    body              BLOB NOT NULL,                     -- the raw body, byte for byte
    verified          INTEGER NOT NULL,
    rejection         TEXT,                               -- the reason code when not verified
    provider_event_id TEXT,
    dedupe_key        TEXT NOT NULL,                      -- the provider's event id, or a hash of signature and body
    duplicates        INTEGER NOT NULL DEFAULT 0,         -- later deliveries of the same webhook
    status            TEXT NOT NULL,                      -- pending | processed | failed | rejected
    event_type        TEXT,                               -- the hub event type it became
    event_id          TEXT,                               -- the hub event it became
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    lease_until       INTEGER,
    processed_at      INTEGER
);
CREATE UNIQUE INDEX inbound_webhooks_dedupe ON inbound_webhooks (tenant_id, connection_id, dedupe_key);
CREATE INDEX inbound_webhooks_by_connection ON inbound_webhooks (tenant_id, connection_id, id);
CREATE INDEX inbound_webhooks_pending ON inbound_webhooks (status, lease_until) WHERE status = 'pending';
