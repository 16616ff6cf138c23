-- Consents this organization recorded, as registered with the gateway. The mapping from a subject
-- pseudonym to the organization's own case record stays in the organization's case system.
CREATE TABLE consents (
    consent_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    receipt_jws TEXT NOT NULL,
    state TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    updated_at_micros BIGINT NOT NULL
);
CREATE INDEX consents_subject ON consents (subject);
