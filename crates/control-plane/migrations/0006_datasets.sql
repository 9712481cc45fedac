-- Datasets (reference §3.1 "Dataset"): JSONL files of records uploaded to a project, through a
-- GraphQL multipart upload (`createDataset`) or a completed chunked upload
-- (`createDatasetFromMultipartUpload`). The file is an object `.datasets/<project id>/<dataset
-- id>.jsonl` under the model registry root; this row is its metadata and processing state.

CREATE TABLE datasets (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    -- PROMPT, PROMPT_COMPLETION, PROMPT_COMPLETION_SCORE or PREFERENCE (known once READY).
    kind TEXT NOT NULL,
    -- UPLOADED (GENERATED, GENERATING, FILTERED are for datasets built by jobs and filters).
    source TEXT NOT NULL,
    -- PENDING -> PROCESSING -> READY or FAILED.
    status TEXT NOT NULL,
    -- Fraction of the file processed, 0 to 1.
    progress DOUBLE PRECISION NOT NULL,
    -- Why processing failed (FAILED only), as the uploader should read it.
    error TEXT,
    records BIGINT,
    size_bytes BIGINT,
    -- Hex SHA-256 of the stored file.
    sha256 TEXT,
    -- The chunked upload session the file came from, if any.
    upload_session_id TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    -- Last status or progress change: processing that stops moving was interrupted.
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, key)
);

CREATE INDEX datasets_project ON datasets (project_id, created_at);
CREATE INDEX datasets_status ON datasets (status, updated_at);
