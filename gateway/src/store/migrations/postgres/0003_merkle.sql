-- The Merkle tree over the audit log, and its signed checkpoints (PostgreSQL).
--
-- Sequencing. `seq` is assigned inside each writing transaction from `audit_head` (migration 1): the
-- row lock is held until commit, so every committed entry has its gap-free position, in commit order,
-- the moment it commits, on every replica. Integration into the tree is a separate step performed by a
-- single integrator at a time: each gateway replica runs one, and they serialize on the `merkle_head`
-- row (`SELECT ... FOR UPDATE`), so exactly one of them extends the tree while the others find nothing
-- left to do. The integrator reads the committed entries past `merkle_head.size` in seq order (under
-- READ COMMITTED a later seq is never visible before an earlier one, because the earlier transaction
-- held `audit_head` until it committed), appends their leaf hashes, writes the perfect subtrees the new
-- leaves complete and advances `merkle_head.size`, in one transaction. Checkpoints are signed over
-- integrated sizes only. A committed entry is never left out: the next pass integrates it (a bounded
-- delay), and the offline verifier catches any gap.
--
-- Append-only: triggers refuse UPDATE, DELETE and TRUNCATE of subtrees and checkpoints, and refuse
-- moving `merkle_head.size` backwards. Roles: the gateway's runtime role needs only
--   GRANT SELECT, INSERT ON merkle_node, audit_checkpoint TO haven_gateway;
--   GRANT SELECT, UPDATE ON merkle_head TO haven_gateway;
-- the owner that runs migrations keeps every other right.

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
    hash BYTEA NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints: the gateway signing key's signature over the body of `haven_trust::audit::Checkpoint`.
CREATE TABLE audit_checkpoint (
    tree_size BIGINT NOT NULL CHECK (tree_size >= 0),
    timestamp_micros BIGINT NOT NULL,
    root_hash BYTEA NOT NULL CHECK (length(root_hash) = 32),
    signature BYTEA NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (tree_size, timestamp_micros)
);

CREATE FUNCTION merkle_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER merkle_node_no_update BEFORE UPDATE OR DELETE ON merkle_node
    FOR EACH ROW EXECUTE FUNCTION merkle_refuse();
CREATE TRIGGER merkle_node_no_truncate BEFORE TRUNCATE ON merkle_node
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_refuse();
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION merkle_refuse();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_refuse();

CREATE FUNCTION merkle_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.size < OLD.size OR NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'merkle_head only moves forward';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER merkle_head_forward_only BEFORE UPDATE OR DELETE ON merkle_head
    FOR EACH ROW EXECUTE FUNCTION merkle_head_forward_only();
CREATE TRIGGER merkle_head_no_truncate BEFORE TRUNCATE ON merkle_head
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_refuse();
