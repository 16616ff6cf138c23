-- The Merkle tree over the audit log, and its signed checkpoints (SQLite).
--
-- Sequencing. `seq` is assigned inside each writing transaction from `audit_head` (migration 1): every
-- committed entry has its gap-free position, in commit order, the moment it commits. Integration into
-- the tree is a separate step that one integrator at a time performs: it reads the committed entries
-- past `merkle_head.size` in seq order, appends their leaf hashes, writes the perfect subtrees the new
-- leaves complete and advances `merkle_head.size`, all in one transaction (SQLite has one writer at a
-- time). Checkpoints are signed over integrated sizes only. A committed entry is therefore never left
-- out: it is integrated by the next pass (a bounded delay), and the offline verifier catches any gap.
--
-- Append-only: triggers refuse UPDATE and DELETE of subtrees and checkpoints, and refuse moving
-- `merkle_head.size` backwards or deleting it.

CREATE TABLE merkle_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- How many leaves (entries 0..size) the tree holds.
    size BIGINT NOT NULL CHECK (size >= 0)
);
INSERT INTO merkle_head (id, size) VALUES (1, 0);

-- Perfect subtrees, named (level, idx): the 2^level leaves [idx * 2^level, (idx + 1) * 2^level). Level 0
-- holds the leaf hashes as integrated. Written once, when the last of their leaves is integrated.
CREATE TABLE merkle_node (
    level BIGINT NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx BIGINT NOT NULL CHECK (idx >= 0),
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Signed checkpoints: the gateway signing key's signature over the body of `haven_trust::audit::Checkpoint`.
CREATE TABLE audit_checkpoint (
    tree_size BIGINT NOT NULL CHECK (tree_size >= 0),
    timestamp_micros BIGINT NOT NULL,
    root_hash BLOB NOT NULL CHECK (length(root_hash) = 32),
    signature BLOB NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (tree_size, timestamp_micros)
);

CREATE TRIGGER merkle_node_no_update BEFORE UPDATE ON merkle_node
BEGIN SELECT RAISE(ABORT, 'merkle_node is append-only'); END;
CREATE TRIGGER merkle_node_no_delete BEFORE DELETE ON merkle_node
BEGIN SELECT RAISE(ABORT, 'merkle_node is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'audit_checkpoint is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'audit_checkpoint is append-only'); END;
CREATE TRIGGER merkle_head_forward_only BEFORE UPDATE ON merkle_head WHEN NEW.size < OLD.size OR NEW.id <> OLD.id
BEGIN SELECT RAISE(ABORT, 'merkle_head only moves forward'); END;
CREATE TRIGGER merkle_head_no_delete BEFORE DELETE ON merkle_head
BEGIN SELECT RAISE(ABORT, 'merkle_head only moves forward'); END;
