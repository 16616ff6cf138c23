-- Received items gain their local lifecycle; sent messages and each recipient's status are kept so
-- people can follow what they sent, and a message the gateway has not yet accepted stays `pending`
-- and is retried with the same message id.
ALTER TABLE inbox ADD COLUMN status TEXT NOT NULL DEFAULT 'delivered';
ALTER TABLE inbox ADD COLUMN withdrawn INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN sender TEXT NOT NULL DEFAULT '';
ALTER TABLE inbox ADD COLUMN kind TEXT NOT NULL DEFAULT '';

CREATE TABLE sent (
    message_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    purpose TEXT NOT NULL,
    -- The encoded Envelope, kept until the gateway has answered, for retries.
    envelope BLOB NOT NULL,
    person TEXT NOT NULL,
    role TEXT NOT NULL,
    -- pending, submitted, failed
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    bundle_version TEXT NOT NULL DEFAULT '',
    created_at_micros BIGINT NOT NULL
);

CREATE TABLE sent_recipients (
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    status TEXT NOT NULL,
    code TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    by_person TEXT NOT NULL DEFAULT '',
    updated_at_micros BIGINT NOT NULL,
    PRIMARY KEY (message_id, recipient)
);
