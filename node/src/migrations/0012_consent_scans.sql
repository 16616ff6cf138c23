-- The scan of a signed consent form, kept only where the organization opts in
-- (`haven-node serve --console-keep-consent-scans`). The receipt holds the scan's SHA-256 whether or
-- not the scan is kept; a kept scan is survivor data, so each opening of it is in the access log.
CREATE TABLE consent_scan (
    consent_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes BLOB NOT NULL,
    stored_by TEXT NOT NULL,
    stored_at_micros BIGINT NOT NULL
);
