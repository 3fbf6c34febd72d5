-- +goose Up
-- Budgets reserved per run. The API keeps the monthly spend limits operators set, for an
-- organization (env_id 0) or one tenant, with the thresholds to alert at (in thousandths of the
-- limit). The metering keeps what runs have reserved against them: a run's worst-case cost,
-- reserved before it starts and removed in the transaction that records its usage, so
-- spent + reserved never passes a limit.
CREATE TABLE api.budgets (
    org_id               BIGINT NOT NULL REFERENCES api.organizations (id),
    env_id               BIGINT NOT NULL DEFAULT 0,
    monthly_limit_micros BIGINT NOT NULL CHECK (monthly_limit_micros >= 0),
    alert_at             INTEGER[] NOT NULL DEFAULT '{}',
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, env_id)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON api.budgets TO convergence_api;

CREATE TABLE metering.budget_reservations (
    task_id       TEXT COLLATE "C" PRIMARY KEY,
    org_id        BIGINT NOT NULL,
    env_id        BIGINT NOT NULL,
    amount_micros BIGINT NOT NULL CHECK (amount_micros >= 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX budget_reservations_org ON metering.budget_reservations (org_id);
CREATE INDEX budget_reservations_env ON metering.budget_reservations (env_id);
GRANT SELECT, INSERT, UPDATE, DELETE ON metering.budget_reservations TO convergence_metering;

-- +goose Down
DROP TABLE metering.budget_reservations;
DROP TABLE api.budgets;
