-- The records syncs keep of providers' data, per connection and model, and the change
-- streams that order them: each change takes the next number of its stream, and the stream's
-- row is locked until the change commits, so changes become visible in their order and a
-- cursor over it never skips or repeats one.
CREATE TABLE record_streams (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    connection_id TEXT NOT NULL,
    model         TEXT NOT NULL,
    last_seq      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, connection_id, model)
);

CREATE TABLE records (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    connection_id TEXT NOT NULL,
    model         TEXT NOT NULL,
    external_id   TEXT NOT NULL,                     -- the primary key's value at the provider
    data          TEXT NOT NULL,                     -- the mapped record, JSON
    hash          TEXT NOT NULL,                     -- of the data: unchanged records are not rewritten
    version       TEXT,                              -- the provider's version or ETag, when it has one
    first_seen_at BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    deleted_at    BIGINT,                                -- soft delete
    run_id        TEXT,                              -- the sync run that last changed it
    change_seq    BIGINT NOT NULL,                       -- its place in the stream's change order
    PRIMARY KEY (tenant_id, connection_id, model, external_id)
);
CREATE UNIQUE INDEX records_in_change_order ON records (tenant_id, connection_id, model, change_seq);
