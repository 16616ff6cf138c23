-- The audit log (SQLite). Append-only: triggers refuse UPDATE and DELETE.
-- `seq` is assigned inside each writing transaction from `audit_head`, whose single row every writer
-- updates; SQLite has one writer at a time, so positions are gap-free and in commit order.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_seq BIGINT NOT NULL
);
INSERT INTO audit_head (id, next_seq) VALUES (1, 0);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    time_micros BIGINT NOT NULL,
    actor_org TEXT NOT NULL,
    actor_person TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    action TEXT NOT NULL,
    object_id TEXT NOT NULL,
    counterparty TEXT NOT NULL,
    subject TEXT NOT NULL,
    purpose TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    rule_ids TEXT NOT NULL,
    bundle_version TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    released_fields TEXT NOT NULL,
    withheld_fields TEXT NOT NULL,
    outcome TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    source_node TEXT NOT NULL,
    -- The subject as the counterparty knows it (its recipient-scoped pseudonym); not hashed.
    counterparty_subject TEXT NOT NULL DEFAULT '',
    leaf_hash BLOB NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor_org, seq);
CREATE INDEX audit_log_counterparty ON audit_log (counterparty, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_object ON audit_log (object_id);
CREATE INDEX audit_log_consent ON audit_log (consent_id);
CREATE INDEX audit_log_time ON audit_log (time_micros);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
