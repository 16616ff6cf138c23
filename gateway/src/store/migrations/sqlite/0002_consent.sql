-- The consent registry (SQLite). The signed receipt is kept verbatim beside the decoded content.
CREATE TABLE consents (
    consent_id TEXT PRIMARY KEY,
    controller TEXT NOT NULL,
    subject TEXT NOT NULL,
    receipt_jws TEXT NOT NULL,
    receipt_json TEXT NOT NULL,
    -- SHA-256 of the decoded receipt: two signatures of the same content are the same consent.
    content_sha256 TEXT NOT NULL,
    valid_from_micros BIGINT NOT NULL,
    valid_until_micros BIGINT NOT NULL,
    -- given, withdrawn, revoked, expired, superseded
    state TEXT NOT NULL,
    revocation_reason TEXT NOT NULL DEFAULT '',
    superseded_by TEXT NOT NULL DEFAULT '',
    registered_at_micros BIGINT NOT NULL,
    state_changed_at_micros BIGINT NOT NULL
);
CREATE INDEX consents_controller ON consents (controller, subject);
CREATE INDEX consents_expiry ON consents (state, valid_until_micros);
