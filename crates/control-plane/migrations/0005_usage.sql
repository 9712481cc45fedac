-- Usage: one row per inference call the gateway completed, whether or not the caller asked to
-- store the interaction (`store: false` keeps the tokens, not the messages). The id is the
-- completion id, so a retried batch counts each call once. Queries aggregate into 15-minute
-- slots and then into calendar buckets (`time_buckets`).

CREATE TABLE usage_events (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    model_service_id TEXT,
    model_id TEXT,
    user_id TEXT,
    api_key_id TEXT,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX usage_events_created ON usage_events (created_at);
CREATE INDEX usage_events_project ON usage_events (project_id, created_at);
CREATE INDEX usage_events_model ON usage_events (model_id, created_at);

-- Scores aggregated per metric over time (`MetricWithContext.timeseries`).
CREATE INDEX scores_metric_created ON scores (metric_id, created_at);
