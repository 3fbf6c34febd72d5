-- +goose Up
-- The budget alert thresholds the API has told of: one row per budget, month and threshold, so
-- each is told once however many API replicas look.
CREATE TABLE api.budget_alerts (
    org_id       BIGINT NOT NULL,
    env_id       BIGINT NOT NULL,
    month        DATE NOT NULL,
    threshold    INTEGER NOT NULL, -- thousandths of the limit
    spent_micros BIGINT NOT NULL,
    limit_micros BIGINT NOT NULL,
    alerted_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, env_id, month, threshold)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON api.budget_alerts TO convergence_api;

-- +goose Down
DROP TABLE api.budget_alerts;
