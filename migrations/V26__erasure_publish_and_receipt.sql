-- Issue 32: an erasure's way to `complete` (README "Erasing a user").
-- `published_at`: when the erasure topic (KAFKA_ERASURE_TOPIC) acknowledged the erasure's record;
-- NULL until then. The row is the outbox: token-api retries every unpublished row until Kafka
-- acknowledges it, so an acknowledged erasure is never lost to a broker's outage.
-- `topics_clear_by`: when the topics naming users (playback, dead letters) no longer hold a
-- record from before the erasure (their longest retention.ms plus one segment.ms, as the brokers
-- reported them at the erasure); NULL when unknown (receipts from before this migration: filled
-- at their next reading).
-- `completed_at` and `archive`: set once, when the receipt became `complete` (published, past
-- `topics_clear_by`, every archive location's keys destroyed); `archive` keeps what each
-- location answered then.
ALTER TABLE erasures
    ADD COLUMN published_at    timestamptz,
    ADD COLUMN topics_clear_by timestamptz,
    ADD COLUMN completed_at    timestamptz,
    ADD COLUMN archive         jsonb;
-- The outbox's queue: small, as rows leave it within seconds.
CREATE INDEX erasures_unpublished_idx ON erasures (applied_at) WHERE published_at IS NULL;
