-- The network-wide lease on each organization's delivery stream. The stream that holds the row is the
-- only one that receives the organization's items and whose acknowledgements apply, on every replica
-- sharing this database. Its replica renews `expires_at_micros` at every heartbeat; a stream that ends
-- deletes its row, and a row past `expires_at_micros` may be taken over by a new stream.
CREATE TABLE stream_leases (
    org TEXT PRIMARY KEY,
    -- The holding stream's id (its Welcome.stream_id).
    stream_id TEXT NOT NULL,
    -- Where the holding stream connected from (address and port as the gateway saw them).
    source TEXT NOT NULL,
    opened_at_micros BIGINT NOT NULL,
    expires_at_micros BIGINT NOT NULL
);
