-- The node's own SQLite database: its inbox (every item the gateway delivered, stored before it is
-- acknowledged) and the newest audit checkpoint it has witnessed.
CREATE TABLE inbox (
    item_id TEXT PRIMARY KEY,
    received_at_micros BIGINT NOT NULL,
    item_kind TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX inbox_message ON inbox (message_id);

CREATE TABLE witness (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tree_size BIGINT NOT NULL,
    checkpoint TEXT NOT NULL,
    checked_at_micros BIGINT NOT NULL
);
