-- +goose Up
-- Tenant provisioning. Organizations get a tenant quota. Environments (tenants) get what the
-- provisioner needs to run, watch and reconcile them: the image and limits they run with, the
-- state the operator wants next to the state they are in, a generation, health and the reason
-- for the last change. Host ports are leased from a pool with a uniqueness guarantee. API keys
-- reach the provisioner sealed to its public key (the platform stores no plaintext key), and a
-- tenant's last logs are archived when its container goes.

ALTER TABLE organizations
    ADD COLUMN max_tenants INTEGER NOT NULL DEFAULT 100 CHECK (max_tenants >= 0),
    ADD COLUMN updated_at  TIMESTAMPTZ NOT NULL DEFAULT now();

ALTER TABLE environments
    -- desired_status is what the operator asked for: 'running' from the spawn on, 'destroyed'
    -- once a destroy was requested. status is what the provisioner last saw.
    ADD COLUMN desired_status    TEXT NOT NULL DEFAULT 'running',
    ADD COLUMN language          TEXT,   -- the template chosen, NULL for an explicit image
    ADD COLUMN framework         TEXT,
    ADD COLUMN image             TEXT,
    ADD COLUMN memory_bytes      BIGINT, -- limits with the platform defaults applied
    ADD COLUMN nano_cpus         BIGINT,
    ADD COLUMN pids_limit        BIGINT,
    -- generation counts the specs a tenant has had; the container carries it as a label, and a
    -- command for an older generation is stale.
    ADD COLUMN generation        BIGINT NOT NULL DEFAULT 1,
    ADD COLUMN health            TEXT,
    ADD COLUMN reason            TEXT,   -- why the tenant entered its status, for error and the like
    ADD COLUMN status_changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN destroyed_at      TIMESTAMPTZ,
    ADD COLUMN request_id        TEXT,   -- the request that spawned it
    ADD CONSTRAINT environments_status_known
        CHECK (status IN ('provisioning', 'running', 'unhealthy', 'stopped', 'error', 'destroyed')),
    ADD CONSTRAINT environments_desired_status_known
        CHECK (desired_status IN ('running', 'destroyed'));

-- A name is unique among an organization's live tenants; a destroyed tenant frees its name.
CREATE UNIQUE INDEX environments_live_name ON environments (org_id, name) WHERE status <> 'destroyed';
CREATE INDEX environments_org ON environments (org_id, id);
CREATE INDEX environments_status ON environments (status, id);

-- tenant_ports is the pool of host ports tenants are published on, one row per port. A lease
-- sets env_id; the primary key and the unique env_id make a port serve one tenant and a tenant
-- hold one port. The provisioner keeps the pool equal to its configured range at start (free
-- rows outside the range are dropped, leased ones stay until released). A port found bound by
-- something else is skipped until unavailable_until.
CREATE TABLE tenant_ports (
    port              INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
    env_id            BIGINT UNIQUE REFERENCES environments (id),
    leased_at         TIMESTAMPTZ,
    unavailable_until TIMESTAMPTZ,
    CHECK ((env_id IS NULL) = (leased_at IS NULL))
);
CREATE INDEX tenant_ports_free ON tenant_ports (port) WHERE env_id IS NULL;
-- The default range, 3001 and up; the provisioner's -provisioner.ports flag changes it.
INSERT INTO tenant_ports (port) SELECT generate_series(3001, 3999);

-- provisioner_keys holds the public halves of the provisioners' sealing keys (HPKE, X25519).
-- The API seals every new tenant key to each of them; only a provisioner can open it, to put
-- the key into the tenant's container.
CREATE TABLE provisioner_keys (
    id         TEXT PRIMARY KEY, -- a digest of public_key
    public_key BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tenant_secrets (
    env_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    key_id TEXT NOT NULL REFERENCES provisioner_keys (id) ON DELETE CASCADE,
    sealed BYTEA NOT NULL,
    PRIMARY KEY (env_id, key_id)
);

-- tenant_logs keeps the last log lines of a tenant's container when the container is removed
-- (destroyed, or rolled back after a failed spawn), so they stay readable afterwards.
CREATE TABLE tenant_logs (
    id          BIGSERIAL PRIMARY KEY,
    env_id      BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    cause       TEXT NOT NULL, -- destroyed, spawn_failed, ...
    exit_code   INTEGER,
    logs        BYTEA NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX tenant_logs_env ON tenant_logs (env_id, id DESC);

-- +goose Down
DROP TABLE tenant_logs;
DROP TABLE tenant_secrets;
DROP TABLE provisioner_keys;
DROP TABLE tenant_ports;
DROP INDEX environments_status;
DROP INDEX environments_org;
DROP INDEX environments_live_name;
ALTER TABLE environments
    DROP CONSTRAINT environments_desired_status_known,
    DROP CONSTRAINT environments_status_known,
    DROP COLUMN request_id,
    DROP COLUMN destroyed_at,
    DROP COLUMN status_changed_at,
    DROP COLUMN reason,
    DROP COLUMN health,
    DROP COLUMN generation,
    DROP COLUMN pids_limit,
    DROP COLUMN nano_cpus,
    DROP COLUMN memory_bytes,
    DROP COLUMN image,
    DROP COLUMN framework,
    DROP COLUMN language,
    DROP COLUMN desired_status;
ALTER TABLE organizations DROP COLUMN updated_at, DROP COLUMN max_tenants;
