-- The organization's people, moved here from the users file (which a node whose database holds
-- nobody imports once: see `people_import`). A person's name is their id on this node and in every
-- token the node signs for them at the gateway.
CREATE TABLE person (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    -- A disabled person keeps their row and password but is refused until enabled again.
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    -- The argon2id hash of their password as a PHC string; NULL until one is set.
    password_hash TEXT,
    created_at_micros BIGINT NOT NULL,
    changed_at_micros BIGINT NOT NULL
);

-- Node tokens, what the command line signs in with: only their SHA-256 (a token is 256 random bits,
-- so there is nothing to brute-force). Disabling a person or changing their role revokes their
-- tokens, which stay so that a revoked token is refused with its reason; removing the person
-- deletes them.
CREATE TABLE person_token (
    token_sha256 TEXT PRIMARY KEY,
    person TEXT NOT NULL REFERENCES person (name) ON DELETE CASCADE,
    issued_at_micros BIGINT NOT NULL,
    revoked_at_micros BIGINT
);
CREATE INDEX person_token_person ON person_token (person);

-- The one import of the users file: once this row exists the file is never read again, even if
-- every person is later removed.
CREATE TABLE people_import (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at_micros BIGINT NOT NULL,
    file TEXT NOT NULL,
    imported BIGINT NOT NULL
);

-- Bumped in the same transaction as every change to the people above, so that a running node sees a
-- change made by `haven-node users` in another process and ends the long calls (inbox watches) of a
-- person who may no longer make them.
CREATE TABLE people_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO people_version (id, version) VALUES (1, 0);
