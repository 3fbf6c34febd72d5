-- +goose Up
-- The installation's instance id: part of the name and a label of every Docker object its
-- provisioner makes, so that installations sharing a Docker engine never take each other's
-- objects for their own. Made once, by the provisioner's first start; '' marks an
-- installation that made objects before instance ids existed, whose names stay as they were.
CREATE TABLE provisioner.installation (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    id         TEXT NOT NULL CHECK (id ~ '^[a-z0-9]{0,16}$'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON provisioner.installation TO convergence_provisioner;

-- +goose Down
DROP TABLE provisioner.installation;
