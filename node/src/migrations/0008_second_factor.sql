-- The console's second factor (RFC 6238). `secret` is in force once `enrolled_at_micros` is set; a new
-- enrollment waits in `pending_secret` until the person types a code it makes. `last_step` is the
-- newest time step accepted, so no code is accepted twice.
CREATE TABLE person_totp (
    person TEXT PRIMARY KEY REFERENCES person (name) ON DELETE CASCADE,
    secret BLOB,
    pending_secret BLOB,
    enrolled_at_micros BIGINT,
    last_step BIGINT NOT NULL DEFAULT -9223372036854775808
);

-- One-time recovery codes: only their SHA-256.
CREATE TABLE person_recovery_code (
    code_sha256 TEXT PRIMARY KEY,
    person TEXT NOT NULL REFERENCES person (name) ON DELETE CASCADE,
    used_at_micros BIGINT
);
CREATE INDEX person_recovery_code_person ON person_recovery_code (person);

-- How far a console session has got: `password` (the second factor is still to come: its code, or for
-- a role that requires one, its enrollment) or `full`.
ALTER TABLE console_session ADD COLUMN stage TEXT NOT NULL DEFAULT 'full';
