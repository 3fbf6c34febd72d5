-- +goose Up
-- What each tenant's container may reach (events.EgressClasses): the provisioner names the
-- tenant's bridge after it, and the installation's firewall rules match the name. Tenants
-- admitted before the column get the default, platform: only the platform API.
ALTER TABLE provisioner.environments
    ADD COLUMN egress TEXT NOT NULL DEFAULT 'platform'
        CHECK (egress IN ('platform', 'internet', 'none'));

-- +goose Down
ALTER TABLE provisioner.environments DROP COLUMN egress;
