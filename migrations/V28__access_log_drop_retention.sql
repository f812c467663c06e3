-- Issue 31's left-over: a drop record keeps the retention it was dropped under (and its HMAC
-- covers it), so raising ACCESS_LOG_RETENTION_DAYS later does not make every earlier drop look
-- early. NULL: a drop recorded before this migration, checked against the retention configured
-- when `verify` runs, as before.
ALTER TABLE access_log_drops ADD COLUMN retention_days integer
    CHECK (retention_days IS NULL OR retention_days > 0);
