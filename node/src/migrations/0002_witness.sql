-- What the node's audit witness found wrong: a fork (two signed checkpoints that cannot describe one
-- log), a checkpoint the gateway's key did not sign, or the registry no longer pinning this
-- organization's own certificates. Rows stay until an operator, having looked into the alarm, deletes
-- them; until then `Node.WitnessStatus` reports the first one.
CREATE TABLE witness_alarm (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_micros BIGINT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL
);
