-- Sync runs: one row per run of a connection's sync, with its progress and the checkpoint a
-- resumed run starts from. At most one run per sync is queued or running at a time.
CREATE TABLE sync_runs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    connection_id    TEXT NOT NULL,
    sync_name        TEXT NOT NULL,
    mode             TEXT NOT NULL,                   -- incremental | full
    status           TEXT NOT NULL,                   -- queued | running | succeeded | failed | cancelled
    pages            BIGINT NOT NULL DEFAULT 0,
    fetched          BIGINT NOT NULL DEFAULT 0,
    added            BIGINT NOT NULL DEFAULT 0,
    updated          BIGINT NOT NULL DEFAULT 0,
    deleted          BIGINT NOT NULL DEFAULT 0,
    unchanged        BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    failures         TEXT NOT NULL DEFAULT '[]',      -- JSON: the first failed items, with reasons
    checkpoint       TEXT,                            -- JSON: where the next page starts
    error            TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX sync_runs_one_active ON sync_runs (tenant_id, connection_id, sync_name)
    WHERE status IN ('queued', 'running');
CREATE INDEX sync_runs_by_sync ON sync_runs (tenant_id, connection_id, sync_name, id);
