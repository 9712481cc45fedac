-- The metadata schema, written in the subset of SQL that PostgreSQL and SQLite share: ids are
-- UUID strings, timestamps are milliseconds since the epoch, booleans are 0/1 integers and
-- structured values are JSON text. See src/store/mod.rs for why.

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    archived BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE models (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    family TEXT,
    size_bytes BIGINT,
    capabilities TEXT NOT NULL,
    tp BIGINT NOT NULL,
    kv_cache_len BIGINT NOT NULL,
    max_seq_len BIGINT NOT NULL,
    published BIGINT NOT NULL DEFAULT 0,
    stable BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE model_services (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    model_id TEXT NOT NULL REFERENCES models (id),
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    is_default BIGINT NOT NULL,
    desired_online BIGINT NOT NULL,
    placement_pools TEXT NOT NULL,
    max_ttft_ms BIGINT,
    system_prompt_template TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (project_id, key),
    UNIQUE (project_id, model_id)
);

CREATE TABLE compute_pools (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE team_members (
    user_id TEXT NOT NULL REFERENCES users (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    role_id TEXT NOT NULL REFERENCES roles (id),
    PRIMARY KEY (user_id, team_id)
);

CREATE TABLE project_shares (
    project_id TEXT NOT NULL REFERENCES projects (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    role_id TEXT NOT NULL REFERENCES roles (id),
    is_owner BIGINT NOT NULL,
    PRIMARY KEY (project_id, team_id)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE metrics (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    scoring_type TEXT NOT NULL,
    description TEXT NOT NULL,
    unit TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE metric_projects (
    metric_id TEXT NOT NULL REFERENCES metrics (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    PRIMARY KEY (metric_id, project_id)
);

CREATE TABLE completions (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    model_service_id TEXT,
    model_id TEXT,
    prompt_hash TEXT NOT NULL,
    chat_messages TEXT NOT NULL,
    completion TEXT,
    source TEXT NOT NULL,
    session_id TEXT,
    created_by TEXT,
    labels TEXT NOT NULL,
    metadata TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX completions_project_created ON completions (project_id, created_at);

CREATE TABLE scores (
    id TEXT PRIMARY KEY,
    completion_id TEXT NOT NULL REFERENCES completions (id),
    metric_id TEXT NOT NULL REFERENCES metrics (id),
    value DOUBLE PRECISION NOT NULL,
    reason TEXT,
    details TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX scores_completion ON scores (completion_id);
