-- Routing (PostgreSQL): submitted messages (for idempotency), one row per recipient copy (its lifecycle,
-- never its field values), and the durable per-organization queue of items.

-- A submission, keyed by the sender's message id. `response` is the encoded SubmitResponse, returned
-- again for an identical resubmission.
CREATE TABLE messages (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    response BYTEA NOT NULL,
    created_at_micros BIGINT NOT NULL,
    PRIMARY KEY (sender, message_id)
);

-- One recipient's copy of a message and where it stands in its lifecycle.
CREATE TABLE deliveries (
    delivery_id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    sender_person TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    purpose TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    recipient_subject TEXT NOT NULL,
    released_fields TEXT NOT NULL,
    -- sent, delivered, accepted, declined, closed, withdrawn, revoked, expired, acknowledged
    status TEXT NOT NULL,
    status_code TEXT NOT NULL DEFAULT '',
    status_by TEXT NOT NULL DEFAULT '',
    updated_at_micros BIGINT NOT NULL,
    expires_at_micros BIGINT NOT NULL
);
CREATE UNIQUE INDEX deliveries_message ON deliveries (sender, message_id, recipient);
CREATE INDEX deliveries_consent ON deliveries (consent_id, status);

-- The durable queue: every item an organization's node must receive and acknowledge. `payload` (the
-- encoded Item, field values included) is emptied in the same transaction that acknowledges, cancels
-- or expires the item; the row stays as a tombstone so a repeated acknowledgement is recognised.
CREATE TABLE outbox (
    item_id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    item_kind TEXT NOT NULL,
    delivery_id TEXT NOT NULL DEFAULT '',
    consent_id TEXT NOT NULL DEFAULT '',
    sender TEXT NOT NULL DEFAULT '',
    payload BYTEA NOT NULL,
    queued_at_micros BIGINT NOT NULL,
    expires_at_micros BIGINT NOT NULL,
    -- pending, acked, cancelled, expired
    state TEXT NOT NULL,
    done_at_micros BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (org, state, item_id);
CREATE INDEX outbox_quota ON outbox (sender, org, state);
CREATE INDEX outbox_expiry ON outbox (state, expires_at_micros);
CREATE INDEX outbox_delivery ON outbox (delivery_id);

-- Status updates already applied, by the caller's idempotency key.
CREATE TABLE status_updates (
    org TEXT NOT NULL,
    update_id TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (org, update_id)
);
