-- Every policy bundle the gateway put in force, by version, with its files (a JSON object of path to
-- text), written in the transaction of the audit entry that put it in force (`gateway_started` or
-- `policy_reloaded`). Nodes fetch an older bundle by version to check a copy sealed under it.
CREATE TABLE policy_bundle (
    version TEXT NOT NULL PRIMARY KEY,
    files TEXT NOT NULL,
    -- The audit entry that put it in force, which a node checks before it decides on the bundle.
    in_force_seq BIGINT NOT NULL,
    in_force_at_micros BIGINT NOT NULL
);
