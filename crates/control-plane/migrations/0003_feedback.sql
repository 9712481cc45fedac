-- Feedback beyond direct scores: preferences between two completions of a project
-- (`POST /api/v1/comparison`) and outcomes of whole sessions (`POST /api/v1/outcome`).

CREATE TABLE comparisons (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    metric_id TEXT NOT NULL REFERENCES metrics (id),
    preferred_completion_id TEXT NOT NULL REFERENCES completions (id),
    other_completion_id TEXT NOT NULL REFERENCES completions (id),
    -- NULL: the preferred completion won; 'good' / 'bad': both were equally good or bad.
    tied TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX comparisons_preferred ON comparisons (preferred_completion_id);
CREATE INDEX comparisons_other ON comparisons (other_completion_id);
CREATE INDEX comparisons_metric ON comparisons (metric_id);

CREATE TABLE outcomes (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    metric_id TEXT NOT NULL REFERENCES metrics (id),
    session_id TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    -- The end user the outcome is about, as the client names it.
    user_id TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX outcomes_session ON outcomes (project_id, session_id);
