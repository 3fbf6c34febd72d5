-- +goose Up
-- convergence_tasks is the converger's record of every convergence task: the request as the
-- API accepted it, its status, and once it ends its result and exact token usage. Metering
-- reconciles its ledger against these rows.
CREATE TABLE convergence_tasks (
    id                TEXT PRIMARY KEY,
    env_id            BIGINT NOT NULL REFERENCES environments (id),
    org_id            BIGINT NOT NULL REFERENCES organizations (id),
    type              TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    request           JSONB NOT NULL,
    result            JSONB,
    stop_reason       TEXT,
    convergence_score DOUBLE PRECISION,
    rounds            INTEGER NOT NULL DEFAULT 0,
    input_tokens      BIGINT NOT NULL DEFAULT 0,
    output_tokens     BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    total_tokens      BIGINT NOT NULL DEFAULT 0,
    error             TEXT,
    request_id        TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX convergence_tasks_env_created ON convergence_tasks (env_id, created_at DESC);
CREATE INDEX convergence_tasks_finished ON convergence_tasks (finished_at) WHERE finished_at IS NOT NULL;

-- +goose Down
DROP TABLE convergence_tasks;
