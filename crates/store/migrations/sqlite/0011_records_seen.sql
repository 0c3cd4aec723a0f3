-- What a full-refresh run has seen of its stream, changed or not: when the run has fetched
-- everything, the stream's live records it did not see are the ones deleted at the provider.
CREATE TABLE records_seen (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    run_id        TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    model         TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    PRIMARY KEY (run_id, model, external_id)
);
