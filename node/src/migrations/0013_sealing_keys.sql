-- The organization's sealing keys (`haven-node keys`): the public half and the statements that publish
-- and withdraw it. The private half is in its own 0600 file beside the signing key, never here.
-- `published_seq` and `withdrawn_seq` are the key-log positions once the gateway took each statement;
-- until then the node registers it again on every key-log round.
CREATE TABLE sealing_key (
    kid TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    created_at_micros BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    statement TEXT NOT NULL,
    statement_sha256 TEXT NOT NULL,
    published_seq BIGINT,
    withdrawal TEXT,
    withdrawal_sha256 TEXT,
    withdrawn_at_micros BIGINT,
    withdrawn_seq BIGINT
);

-- The gateway's key log as this node verified it: every entry (the log holds public keys only), and
-- every key-log checkpoint it found consistent with its copy.
CREATE TABLE key_log_entry (
    seq BIGINT PRIMARY KEY,
    registered_at_micros BIGINT NOT NULL,
    statement TEXT NOT NULL,
    statement_sha256 TEXT NOT NULL,
    org TEXT NOT NULL,
    kid TEXT NOT NULL,
    action TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    public_key TEXT NOT NULL,
    -- A statement in this organization's name that this node did not make (set when it is stored), and
    -- when its alarm was raised: an alarm not raised yet (a crash in between) is raised next round.
    foreign_statement INTEGER NOT NULL DEFAULT 0,
    alarmed_at_micros BIGINT
);
CREATE INDEX key_log_entry_by_org ON key_log_entry (org, kid);

CREATE TABLE key_log_checkpoint (
    tree_size BIGINT PRIMARY KEY,
    checkpoint TEXT NOT NULL,
    checked_at_micros BIGINT NOT NULL
);
