-- Timestamps are microseconds since the Unix epoch; JSON is stored as text.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,        -- equal to id: every table carries tenant_id
    name        TEXT NOT NULL,
    is_operator INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    CHECK (tenant_id = id)
);
-- At most one operator tenant: the one created at first start.
CREATE UNIQUE INDEX tenants_single_operator ON tenants (is_operator) WHERE is_operator = 1;

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    masked      TEXT NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

CREATE TABLE event_types (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    schema      TEXT,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX events_by_tenant ON events (tenant_id, id);
CREATE INDEX events_by_tenant_type ON events (tenant_id, event_type, id);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    queue            TEXT NOT NULL,
    payload          TEXT NOT NULL,
    run_at           INTEGER NOT NULL,
    lease_id         TEXT,
    lease_expires_at INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    failed_at        INTEGER,
    created_at       INTEGER NOT NULL
);
CREATE INDEX jobs_claimable ON jobs (queue, run_at) WHERE failed_at IS NULL;

CREATE TABLE secrets (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    key_id      TEXT NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX secrets_by_tenant ON secrets (tenant_id, id);
