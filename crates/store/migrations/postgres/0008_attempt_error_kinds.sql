-- An attempt's error kind is a closed set from now on: a refused address (recorded before by
-- the refusal's own code, `loopback_address` and the like) is `forbidden_address`, an
-- unsupported scheme `invalid_url`. The detail stays in the attempt's `error`.
UPDATE attempts SET error_kind = 'invalid_url' WHERE error_kind = 'unsupported_scheme';
UPDATE attempts SET error_kind = 'forbidden_address'
WHERE error_kind IS NOT NULL
  AND error_kind NOT IN ('invalid_url', 'forbidden_address', 'dns_error', 'timeout', 'connection_error',
                         'request_error', 'transform_error');
