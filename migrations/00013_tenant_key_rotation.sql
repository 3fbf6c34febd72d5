-- +goose Up
-- Key rotation: a tenant may hold several keys. Each has an id to name it by, the time it was
-- last used (to the minute), an expiry once a newer key replaced it, and why it was revoked: a
-- key works while it is neither revoked nor expired. Until now only a destroy revoked keys.
ALTER TABLE api.tenant_keys
    ADD COLUMN id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    ADD COLUMN expires_at TIMESTAMPTZ,
    ADD COLUMN last_used_at TIMESTAMPTZ,
    ADD COLUMN revoked_reason TEXT CHECK (revoked_reason IN ('destroyed', 'revoked'));
UPDATE api.tenant_keys SET revoked_reason = 'destroyed' WHERE revoked_at IS NOT NULL;
ALTER TABLE api.tenant_keys ADD CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL));
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA api TO convergence_api;

-- Since when the tenant's newest key waits to be put into its running container; NULL once it
-- is there (or there is no container to put it in).
ALTER TABLE provisioner.environments ADD COLUMN key_pending_since TIMESTAMPTZ;

-- +goose Down
ALTER TABLE provisioner.environments DROP COLUMN key_pending_since;
ALTER TABLE api.tenant_keys DROP COLUMN id, DROP COLUMN expires_at, DROP COLUMN last_used_at, DROP COLUMN revoked_reason;
