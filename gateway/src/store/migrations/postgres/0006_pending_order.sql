-- The stream's read of an organization's oldest pending items (`queue::PENDING`) must walk this index,
-- whatever the statistics say. With `item_id` in the database's collation the primary key gives the
-- same order, and a generic plan made while many items were pending walks the primary key from the
-- start, filtering out every acknowledged item and every other organization's: milliseconds to
-- seconds a read once the table has grown, against microseconds here. Ordering by `item_id` in the
-- "C" collation (bytewise, as SQLite's BINARY; item ids are ASCII UUIDs, so the order is the same)
-- is an order only this index gives.
CREATE INDEX outbox_pending_c ON outbox (org, state, item_id COLLATE "C");
DROP INDEX outbox_pending;
ALTER INDEX outbox_pending_c RENAME TO outbox_pending;
