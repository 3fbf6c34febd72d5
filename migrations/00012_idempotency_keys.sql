-- +goose Up
-- Idempotency-Key: a create a tenant retried with the same key and body within a day answers
-- with the task the first made instead of making another. The key belongs to the tenant; the
-- body's hash tells a retry from a key used again for another request; status is the first
-- answer's, once it was given.
CREATE TABLE api.idempotency_keys (
    env_id     BIGINT NOT NULL,
    key        TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    body_hash  BYTEA NOT NULL,
    task_id    TEXT NOT NULL,
    status     INT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, key)
);
CREATE INDEX idempotency_keys_created_at ON api.idempotency_keys (created_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON api.idempotency_keys TO convergence_api;

-- +goose Down
DROP TABLE api.idempotency_keys;
