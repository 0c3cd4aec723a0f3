-- Outgoing webhooks: endpoints (subscriptions), messages (one event x one endpoint, which are
-- also the delivery queue) and attempts. WITHOUT ROWID: the tables are kept in id order
-- (ids are sortable ULIDs), so a row is written once instead of in a table and a key index.
CREATE TABLE endpoints (
    id                         TEXT PRIMARY KEY,
    tenant_id                  TEXT NOT NULL REFERENCES tenants (id),
    url                        TEXT NOT NULL,
    description                TEXT NOT NULL,
    event_types                TEXT NOT NULL,          -- JSON array of names and `prefix.*` patterns
    filter_jq                  TEXT,
    transform_jq               TEXT,
    headers                    TEXT NOT NULL,          -- JSON object
    rate_limit_per_second      INTEGER,
    enabled                    INTEGER NOT NULL,
    disabled_reason            TEXT,
    fifo                       INTEGER NOT NULL,
    metadata                   TEXT NOT NULL,          -- JSON object
    secret_id                  TEXT NOT NULL,          -- in secrets
    previous_secret_id         TEXT,                   -- still signing until previous_secret_expires_at
    previous_secret_expires_at INTEGER,
    failing_since              INTEGER,                 -- first failure since the last success
    version                    INTEGER NOT NULL,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL,
    deleted_at                 INTEGER
) WITHOUT ROWID;
CREATE INDEX endpoints_by_tenant ON endpoints (tenant_id, id) WHERE deleted_at IS NULL;

-- A pending message is due when next_attempt_at has passed. A worker that claims it moves
-- next_attempt_at to the end of its lease, so a crashed worker's messages come due again.
CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL,
    status           TEXT NOT NULL,                    -- pending | succeeded | failed
    fifo             INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,       -- attempts made, ever
    retry_index      INTEGER NOT NULL DEFAULT 0,       -- position in the retry schedule
    next_attempt_at  INTEGER,
    lease_id         TEXT,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX messages_due ON messages (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX messages_pending_by_endpoint ON messages (endpoint_id, id) WHERE status = 'pending';
CREATE INDEX messages_by_endpoint ON messages (tenant_id, endpoint_id, id);
CREATE INDEX messages_by_event ON messages (tenant_id, event_id, id);

CREATE TABLE attempts (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL,
    attempt_number   INTEGER NOT NULL,
    succeeded        INTEGER NOT NULL,
    response_status  INTEGER,
    response_headers TEXT,                             -- JSON object, a subset
    response_body    TEXT,                             -- at most 4 KiB
    error_kind       TEXT,
    error            TEXT,
    duration_us      INTEGER NOT NULL,
    created_at       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX attempts_by_message ON attempts (tenant_id, message_id, id);
CREATE INDEX attempts_by_endpoint ON attempts (tenant_id, endpoint_id, id);
