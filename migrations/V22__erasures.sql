-- Issue 32: erasure receipts. One row per `POST /v1/users/{id}/erasure` (a repeat is a new
-- receipt). A receipt names its subject by tag only (never the id), the key generation the
-- erasure destroyed, who asked and on what basis, and how many rows each table lost.
-- `status`: `applied` once the tables and the key are done (the topics and the archive, which
-- make a receipt `complete`, are a later slice's).
--
-- Privileges: V20's default privileges grant kollus_service SELECT, INSERT, UPDATE, DELETE on
-- tables created by the migration role; granted here again so a migration role other than
-- V20's still leaves the service able to write receipts.
CREATE TABLE erasures (
    id           uuid        PRIMARY KEY,
    subject_tag  text        NOT NULL,
    generation   integer,
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text        NOT NULL,
    basis        text        NOT NULL CHECK (basis IN ('pipa_36', 'gdpr_17', 'other')),
    note         text,
    status       text        NOT NULL CHECK (status IN ('accepted', 'applied', 'complete', 'failed')),
    applied_at   timestamptz,
    tables       jsonb       NOT NULL DEFAULT '{}'
);
-- The console's "erased on ..." for a searched id: the latest receipt of a tag.
CREATE INDEX erasures_subject_idx ON erasures (subject_tag, requested_at DESC);
GRANT SELECT, INSERT, UPDATE, DELETE ON erasures TO kollus_service;
