-- The public key log (PostgreSQL): every sealing-key statement the gateway accepted, in order, and the
-- signed checkpoints of its own Merkle tree (`haven_trust::keylog`). A statement is stored once (by
-- the SHA-256 of the whole JWS). Appends serialize on an EXCLUSIVE lock of `key_log` (readers are not
-- blocked), so gateway replicas give gap-free positions. Append-only: triggers refuse UPDATE, DELETE
-- and TRUNCATE. The runtime role needs only
--   GRANT SELECT, INSERT ON key_log, key_log_checkpoint TO haven_gateway;
CREATE TABLE key_log (
    seq BIGINT PRIMARY KEY CHECK (seq >= 0),
    registered_at_micros BIGINT NOT NULL,
    org TEXT NOT NULL,
    key_id TEXT NOT NULL,
    -- publish or withdraw
    action TEXT NOT NULL,
    statement TEXT NOT NULL,
    statement_sha256 BYTEA NOT NULL UNIQUE CHECK (length(statement_sha256) = 32),
    leaf_hash BYTEA NOT NULL CHECK (length(leaf_hash) = 32)
);
CREATE INDEX key_log_by_key ON key_log (org, key_id);

CREATE TABLE key_log_checkpoint (
    tree_size BIGINT NOT NULL PRIMARY KEY CHECK (tree_size > 0),
    timestamp_micros BIGINT NOT NULL,
    root_hash BYTEA NOT NULL CHECK (length(root_hash) = 32),
    signature BYTEA NOT NULL,
    key_id TEXT NOT NULL
);

CREATE FUNCTION key_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER key_log_no_update BEFORE UPDATE OR DELETE ON key_log
    FOR EACH ROW EXECUTE FUNCTION key_log_refuse();
CREATE TRIGGER key_log_no_truncate BEFORE TRUNCATE ON key_log
    FOR EACH STATEMENT EXECUTE FUNCTION key_log_refuse();
CREATE TRIGGER key_log_checkpoint_no_update BEFORE UPDATE OR DELETE ON key_log_checkpoint
    FOR EACH ROW EXECUTE FUNCTION key_log_refuse();
CREATE TRIGGER key_log_checkpoint_no_truncate BEFORE TRUNCATE ON key_log_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION key_log_refuse();
