-- The public key log (SQLite): every sealing-key statement the gateway accepted, in order, and the
-- signed checkpoints of its own Merkle tree (`haven_trust::keylog`). A statement is stored once (by
-- the SHA-256 of the whole JWS). Appends are serialized by SQLite's one writer. Append-only: triggers
-- refuse UPDATE and DELETE.
CREATE TABLE key_log (
    seq BIGINT NOT NULL PRIMARY KEY CHECK (seq >= 0),
    registered_at_micros BIGINT NOT NULL,
    org TEXT NOT NULL,
    key_id TEXT NOT NULL,
    -- publish or withdraw
    action TEXT NOT NULL,
    statement TEXT NOT NULL,
    statement_sha256 BLOB NOT NULL UNIQUE CHECK (length(statement_sha256) = 32),
    leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32)
);
CREATE INDEX key_log_by_key ON key_log (org, key_id);

CREATE TABLE key_log_checkpoint (
    tree_size BIGINT NOT NULL PRIMARY KEY CHECK (tree_size > 0),
    timestamp_micros BIGINT NOT NULL,
    root_hash BLOB NOT NULL CHECK (length(root_hash) = 32),
    signature BLOB NOT NULL,
    key_id TEXT NOT NULL
);

CREATE TRIGGER key_log_no_update BEFORE UPDATE ON key_log
BEGIN SELECT RAISE(ABORT, 'key_log is append-only'); END;
CREATE TRIGGER key_log_no_delete BEFORE DELETE ON key_log
BEGIN SELECT RAISE(ABORT, 'key_log is append-only'); END;
CREATE TRIGGER key_log_checkpoint_no_update BEFORE UPDATE ON key_log_checkpoint
BEGIN SELECT RAISE(ABORT, 'key_log_checkpoint is append-only'); END;
CREATE TRIGGER key_log_checkpoint_no_delete BEFORE DELETE ON key_log_checkpoint
BEGIN SELECT RAISE(ABORT, 'key_log_checkpoint is append-only'); END;
