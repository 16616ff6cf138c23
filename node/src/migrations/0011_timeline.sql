-- Each step of a message's life, as this node learned it, for the status timeline: the send, the
-- gateway's answer per recipient (queued or denied), delivery, each party's status change, a
-- cancellation or an expiry. `counterparty` is the recipient of a sent message or the sender of a
-- received one; `by_org` is empty for a step this organization took. Codes, never field values.
CREATE TABLE message_step (
    step_id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    counterparty TEXT NOT NULL DEFAULT '',
    step TEXT NOT NULL,
    code TEXT NOT NULL DEFAULT '',
    by_org TEXT NOT NULL DEFAULT '',
    by_person TEXT NOT NULL DEFAULT '',
    at_micros BIGINT NOT NULL
);
CREATE INDEX message_step_by_message ON message_step (message_id, step_id);
