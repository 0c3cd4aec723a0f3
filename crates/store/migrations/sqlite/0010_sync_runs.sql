-- Sync runs: one row per run of a connection's sync, with its progress and the checkpoint a
-- resumed run starts from. At most one run per sync is queued or running at a time.
CREATE TABLE sync_runs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    connection_id    TEXT NOT NULL,
    sync_name        TEXT NOT NULL,
    mode             TEXT NOT NULL,                   -- incremental | full
    status           TEXT NOT NULL,                   -- queued | running | succeeded | failed | cancelled
    pages            INTEGER NOT NULL DEFAULT 0,
    fetched          INTEGER NOT NULL DEFAULT 0,
    added            INTEGER NOT NULL DEFAULT 0,
    updated          INTEGER NOT NULL DEFAULT 0,
    deleted          INTEGER NOT NULL DEFAULT 0,
    unchanged        INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0,
    failures         TEXT NOT NULL DEFAULT '[]',      -- JSON: the first failed items, with reasons
    checkpoint       TEXT,                            -- JSON: where the next page starts
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX sync_runs_one_active ON sync_runs (tenant_id, connection_id, sync_name)
    WHERE status IN ('queued', 'running');
CREATE INDEX sync_runs_by_sync ON sync_runs (tenant_id, connection_id, sync_name, id);
