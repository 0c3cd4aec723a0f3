-- Connections: a provider installed by a tenant, with its config and sealed credentials.
CREATE TABLE connections (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    provider              TEXT NOT NULL,                 -- the manifest's name
    name                  TEXT NOT NULL,
    auth_mode             TEXT NOT NULL,
    config                TEXT NOT NULL,                 -- JSON object: the form's non-secret values
    credentials_secret_id TEXT,                          -- in secrets: credentials and secret config values
    credential_fields     TEXT NOT NULL,                 -- JSON object: field name -> set at (micros)
    auth_state            TEXT NOT NULL,                 -- missing_credentials | configured | ok | rejected
    last_success_at       INTEGER,
    last_error            TEXT,
    last_error_at         INTEGER,
    last_test_at          INTEGER,
    last_test_ok          INTEGER,
    version               INTEGER NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX connections_by_tenant ON connections (tenant_id, id);
CREATE INDEX connections_by_provider ON connections (provider);
