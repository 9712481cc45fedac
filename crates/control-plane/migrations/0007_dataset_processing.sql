-- Resumable processing of chunked uploads, and what a dataset's records score.
--
-- A replica processing a dataset holds a claim on its row: its id (`claimed_by`) and a lease
-- (`claim_expires_at`) that it renews while it works. A replica that stops gracefully gives
-- the claim up (`claimed_by` NULL, `claim_expires_at` 0); one that dies lets the lease run out.
-- Either way another replica (or the same one after a restart) claims the row with a
-- conditional update and processes the upload's parts again from the start. Rows written
-- before leases existed have no `claim_expires_at` and are judged by `updated_at` instead.

ALTER TABLE datasets ADD COLUMN claimed_by TEXT;
ALTER TABLE datasets ADD COLUMN claim_expires_at BIGINT;
-- How many times a claim ran out (its replica died mid-processing): a file that kills every
-- replica that reads it is failed after a few, not retried forever.
ALTER TABLE datasets ADD COLUMN expired_claims BIGINT NOT NULL DEFAULT 0;
-- JSON list of {metric, score_count, comparison_count} per metric key the records name
-- (known once READY).
ALTER TABLE datasets ADD COLUMN metrics_usage TEXT;

CREATE INDEX datasets_claims ON datasets (status, claim_expires_at);
