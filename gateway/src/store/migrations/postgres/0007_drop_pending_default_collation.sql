-- `outbox_pending_c` (migration 6) replaces `outbox_pending`. The drop is this transaction's first
-- statement, so it holds no lock before it waits: a running replica's transaction that reads and then
-- writes `outbox` goes ahead of it instead of deadlocking with it. While it waits, and for the moment
-- it takes, reads and writes of `outbox` wait behind it.
DROP INDEX outbox_pending;
