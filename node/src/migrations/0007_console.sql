-- What the organization's own people did at this node: every view of survivor data (field names,
-- never values), sign-ins, failed sign-ins and sign-outs. The node's own trail, beside the gateway's.
CREATE TABLE access_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_micros BIGINT NOT NULL,
    -- The person, or for a failed sign-in the name given (at most 64 characters of it).
    person TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '',
    -- viewed, assigned, signed_in, sign_in_failed, sign_in_waited, signed_out
    action TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    -- The recipient-scoped pseudonym of the subject whose data was shown.
    subject TEXT NOT NULL DEFAULT '',
    -- The names of the fields shown, comma-separated; never their values.
    fields TEXT NOT NULL DEFAULT '',
    -- Where the person was: `console <address>` or `api`.
    source TEXT NOT NULL DEFAULT '',
    -- The address sign-in limits count by ('' for the API).
    address TEXT NOT NULL DEFAULT ''
);
CREATE INDEX access_log_person ON access_log (person, action, at_micros);
CREATE INDEX access_log_address ON access_log (address, action, at_micros);
CREATE INDEX access_log_message ON access_log (message_id);

-- Console sessions: only the SHA-256 of the session id (256 random bits) is kept. A session is
-- refused once it has been idle too long, lived too long, was ended by signing out, or when its
-- person is disabled, removed or given another role (the role is kept to tell).
CREATE TABLE console_session (
    id_sha256 TEXT PRIMARY KEY,
    person TEXT NOT NULL REFERENCES person (name) ON DELETE CASCADE,
    role TEXT NOT NULL,
    -- The token every state-changing form of this session carries.
    csrf TEXT NOT NULL,
    created_at_micros BIGINT NOT NULL,
    last_seen_micros BIGINT NOT NULL,
    ended_at_micros BIGINT
);
CREATE INDEX console_session_person ON console_session (person);
