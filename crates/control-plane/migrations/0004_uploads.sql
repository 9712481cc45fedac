-- Chunked uploads (`/api/v1/upload/*`): a session per file being uploaded and a row per part
-- received. The part bytes live in object storage under `.uploads/<session>/<part>` of the model
-- registry root; these rows are what survives a restart and what every replica sees.

CREATE TABLE upload_sessions (
    id TEXT PRIMARY KEY,
    -- The user who opened the session; nobody else sees it.
    created_by TEXT NOT NULL,
    content_type TEXT,
    -- JSON object, as the client sent it.
    metadata TEXT,
    total_parts_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Last init or part received: sessions idle for too long are removed.
    updated_at BIGINT NOT NULL,
    -- Set once a later step (dataset or model import) has taken the parts.
    completed_at BIGINT
);

CREATE INDEX upload_sessions_updated ON upload_sessions (updated_at);

CREATE TABLE upload_parts (
    session_id TEXT NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    part_number BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, part_number)
);
