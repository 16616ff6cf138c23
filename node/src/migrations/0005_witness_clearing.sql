-- A witness alarm is cleared, never deleted, so the rows stay as the alarm's history:
-- - `cleared_by = 'pins'`: an `unpinned` alarm the registry resolved (a later check found this
--   organization's own certificates pinned, and no other), for example at the end of a rotation;
-- - `cleared_by = 'ack'`: an auditor acknowledged it (`Node.AcknowledgeWitnessAlarm`), naming
--   themselves in `acked_by` and saying what they found in `ack_note`.
-- `Node.WitnessStatus` reports the first alarm not cleared.
ALTER TABLE witness_alarm ADD COLUMN cleared_at_micros BIGINT;
ALTER TABLE witness_alarm ADD COLUMN cleared_by TEXT;
ALTER TABLE witness_alarm ADD COLUMN acked_by TEXT;
ALTER TABLE witness_alarm ADD COLUMN ack_note TEXT;
