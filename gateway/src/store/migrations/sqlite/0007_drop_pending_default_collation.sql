-- PostgreSQL drops its `outbox_pending` here, replaced by a bytewise one in migration 6. SQLite keeps
-- its `outbox_pending`, already bytewise (BINARY): nothing changes here.
SELECT 1;
