-- Subjects keyed by (controller, pseudonym), and audit entries that bind the counterparty's pseudonym
-- (SQLite).
--
-- `deliveries.pseudonym_version`: the derivation of the copy's `recipient_subject`. Version 1,
-- HMAC(secret, recipient ‖ 0x00 ‖ subject), ignored the controller, so two controllers using one
-- pseudonym string gave a recipient one pseudonym; copies queued before this migration keep it, since
-- their recipients already hold it. Copies queued from now on use version 2, which also hashes in the
-- controller (`gateway/src/routing/pseudonym.rs`). Rows are never rewritten.
--
-- `audit_log.encoding_version`: the canonical encoding the entry's leaf was built with. Entries written
-- before this migration are version 2, which does not bind `counterparty_subject`; entries written from
-- now on are version 3, which does. Adding a column fires no UPDATE trigger and changes no leaf.
ALTER TABLE deliveries ADD COLUMN pseudonym_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN encoding_version BIGINT NOT NULL DEFAULT 2;
