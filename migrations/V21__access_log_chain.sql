-- Issue 31: the access log's chain is walked forward from a seal to the one naming it as its
-- previous (the sealer finds the chain's end so; retention finds which dropped rows a kept seal
-- names). One index per seal partition, created with each new one.
CREATE INDEX access_log_seals_prev_idx ON access_log_seals (class, prev_id);
