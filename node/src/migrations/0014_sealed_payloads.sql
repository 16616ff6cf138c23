-- Sealed payloads. A send keeps the exact request it sealed (`sealed_submit`), so that every retry sends
-- the same bytes; it is sealed again only after the gateway answers `bundle_changed`.
ALTER TABLE sent ADD COLUMN sealed_submit BLOB;

-- The policy bundles this node decided or checked under, by version: the files as the gateway served
-- them (JSON object of path to text), whose hash is the version. Kept, since a copy sealed under an old
-- bundle is checked against that bundle's schema.
CREATE TABLE policy_bundle (
    version TEXT PRIMARY KEY,
    files TEXT NOT NULL,
    -- The bundle's delivery TTL: a retired sealing key is kept until the longest has passed.
    delivery_ttl_days BIGINT NOT NULL,
    -- The audit entry that put it in force, as the gateway proved it: a bundle served as the one in force
    -- with an older entry than one this node accepted before is a rollback, and refused.
    in_force_seq BIGINT NOT NULL DEFAULT 0,
    fetched_at_micros BIGINT NOT NULL
);

-- A received copy that failed its checks is stored, acknowledged and shown to no one: `rejected` holds
-- the reason code ('' for a copy that opened and verified).
ALTER TABLE inbox ADD COLUMN rejected TEXT NOT NULL DEFAULT '';

-- Every message this node accepted, by the sender and message id its verified manifest names. Kept
-- when values are purged, so a replayed copy is never shown twice.
CREATE TABLE received_message (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    PRIMARY KEY (sender, message_id)
);

-- Integrity failures to report to the gateway (`Gateway.ReportIntegrityFailure`), until it answers.
CREATE TABLE integrity_report (
    item_id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    found_at_micros BIGINT NOT NULL,
    reported_at_micros BIGINT
);

-- When a retired key's private half was destroyed: its window had ended and the longest delivery TTL
-- of the bundles this node knows had passed since, so no copy sealed to it can still arrive.
ALTER TABLE sealing_key ADD COLUMN destroyed_at_micros BIGINT;
