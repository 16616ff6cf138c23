-- The audit log (PostgreSQL). Append-only: triggers refuse UPDATE, DELETE and TRUNCATE.
--
-- Roles: the gateway's runtime role needs INSERT and SELECT on audit_log and UPDATE on audit_head
-- only. A deployment that separates duties runs migrations as the owner and grants the runtime role:
--   GRANT SELECT, INSERT ON audit_log TO haven_gateway;
--   GRANT SELECT, UPDATE ON audit_head TO haven_gateway;
-- so that even a compromised gateway cannot rewrite the log without the owner's credentials; the
-- triggers below hold for every role, and the offline verifier catches any rewrite anyway.
--
-- `seq` is assigned inside each writing transaction by updating the single `audit_head` row. The row
-- lock is held until commit, so positions are gap-free and in commit order across replicas.
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
    counterparty_subject TEXT NOT NULL DEFAULT '',
    leaf_hash BYTEA NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor_org, seq);
CREATE INDEX audit_log_counterparty ON audit_log (counterparty, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_object ON audit_log (object_id);
CREATE INDEX audit_log_consent ON audit_log (consent_id);
CREATE INDEX audit_log_time ON audit_log (time_micros);

CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();
