-- When the current access token was obtained: with its expiry, its lifetime, which sets how
-- close to the expiry it is refreshed (a token that lives 15 s is not stale at birth).
ALTER TABLE connections ADD COLUMN token_issued_at BIGINT;
