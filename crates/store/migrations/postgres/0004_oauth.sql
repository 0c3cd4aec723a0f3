-- OAuth2 connections: token metadata and refresh bookkeeping on the connection (the tokens
-- themselves stay in its sealed credentials), and pending authorization requests.
ALTER TABLE connections ADD COLUMN token_expires_at BIGINT;            -- the access token's expiry, if known
ALTER TABLE connections ADD COLUMN token_scopes TEXT NOT NULL DEFAULT '[]'; -- JSON array: scopes granted
ALTER TABLE connections ADD COLUMN last_refresh_at BIGINT;
ALTER TABLE connections ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN refresh_retry_at BIGINT;            -- no refresh before this (backoff)
ALTER TABLE connections ADD COLUMN refresh_lease_until BIGINT;         -- a process is refreshing until then
ALTER TABLE connections ADD COLUMN refresh_lease_owner TEXT;
CREATE INDEX connections_by_token_expiry ON connections (token_expires_at) WHERE token_expires_at IS NOT NULL;

-- A started connect flow: single-use, bound to a tenant and a connection, short-lived.
CREATE TABLE oauth_states (
    state_hash         TEXT PRIMARY KEY,                  -- SHA-256 of the state; the state itself is never stored
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    connection_id      TEXT NOT NULL,
    verifier_secret_id TEXT,                              -- in secrets: the PKCE code verifier
    redirect_uri       TEXT NOT NULL,
    return_url         TEXT,
    scopes             TEXT NOT NULL,                     -- JSON array: the scopes requested
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    used_at            BIGINT
);
CREATE INDEX oauth_states_by_expiry ON oauth_states (expires_at);
