-- +goose Up
-- Idempotency-Key on an operator's create: the first answer under a key is kept for a day, so a
-- retry with the same key and body gets it again instead of making a second organization. Only
-- answers without secrets are kept here.
CREATE TABLE api.operator_idempotency_keys (
    operation  TEXT NOT NULL,
    key        TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    body_hash  BYTEA NOT NULL,
    status     INT NOT NULL,
    answer     JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (operation, key)
);
CREATE INDEX operator_idempotency_keys_created_at ON api.operator_idempotency_keys (created_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON api.operator_idempotency_keys TO convergence_api;

-- +goose Down
DROP TABLE api.operator_idempotency_keys;
