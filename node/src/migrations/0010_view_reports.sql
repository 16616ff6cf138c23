-- Each view of survivor data is reported to the gateway (Gateway.ReportViews) from this log, late
-- rather than never: `view_id` names the record at the gateway (which stores it once), and
-- `reported_at_micros` is set once the gateway answered for it, with its refusal if it refused.
ALTER TABLE access_log ADD COLUMN view_id TEXT NOT NULL DEFAULT '';
ALTER TABLE access_log ADD COLUMN reported_at_micros BIGINT;
ALTER TABLE access_log ADD COLUMN report_refusal TEXT NOT NULL DEFAULT '';
CREATE INDEX access_log_unreported ON access_log (action, reported_at_micros);
