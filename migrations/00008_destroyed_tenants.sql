-- +goose Up
-- The tenants whose destroy the converger has seen: it cancels their unfinished tasks, and a
-- converge request of theirs that arrives later is cancelled instead of run.
CREATE TABLE converger.destroyed_tenants (
    env_id       BIGINT PRIMARY KEY,
    destroyed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON converger.destroyed_tenants TO convergence_converger;

-- +goose Down
DROP TABLE converger.destroyed_tenants;
