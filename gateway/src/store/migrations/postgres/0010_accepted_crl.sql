-- The newest certificate revocation list the gateway has accepted. A CRL older than this one is
-- refused at start-up and on reload, so an old or emptied crl.pem cannot bring a revoked certificate
-- back, not even across a restart. One row at most.
CREATE TABLE accepted_crl (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- thisUpdate of the newest CRL accepted, Unix seconds.
    this_update_secs BIGINT NOT NULL,
    -- Its CRL number, lowercase hex without leading zeros; empty if it has none.
    crl_number TEXT NOT NULL,
    accepted_at_micros BIGINT NOT NULL
);
