-- PostgreSQL orders the stream's read of pending items by `item_id` in the "C" collation, so that only
-- its new `outbox_pending_c` can give that order. SQLite compares text bytewise (BINARY) already, and
-- its planner takes `outbox_pending` for that read: nothing changes here.
SELECT 1;
