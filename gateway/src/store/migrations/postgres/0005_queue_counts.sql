-- The queue quota, counted as the queue changes: how many deliveries from each sender wait for each
-- organization. Kept by the same transactions that queue and end deliveries, so a submission checks
-- its quota with one row read instead of counting the queue.
CREATE TABLE queue_counts (
    sender TEXT NOT NULL,
    org TEXT NOT NULL,
    pending BIGINT NOT NULL,
    PRIMARY KEY (sender, org)
);
INSERT INTO queue_counts (sender, org, pending)
    SELECT sender, org, COUNT(*) FROM outbox WHERE state = 'pending' AND item_kind = 'delivery' GROUP BY sender, org;
-- The quota index is no longer read.
DROP INDEX outbox_quota;
