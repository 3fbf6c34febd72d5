-- +goose Up
-- Each service owns a schema, and a database role with rights on it. The roles are what the
-- services connect as (internal/pgrole), so the database itself refuses a service that reaches
-- into another's tables. Every table moves with its rows, indexes and sequences; foreign keys
-- between two services' tables are dropped, since neither may check the other's rows.
--
-- The outbox sits with each service that writes events, so each service relays its own. The
-- processed_events table goes: no consumer wrote it.
--
-- No role has a right on another service's schema: what a service needs of another arrives in
-- events or is asked of its owner on the bus.

CREATE SCHEMA api;
CREATE SCHEMA provisioner;
CREATE SCHEMA converger;
CREATE SCHEMA metering;

-- The API: organizations, rate limits, and the events it sends.
ALTER TABLE organizations SET SCHEMA api;
ALTER TABLE api_rate_buckets SET SCHEMA api;
ALTER TABLE api_rate_limits SET SCHEMA api;
ALTER TABLE outbox SET SCHEMA api;

-- The provisioner: tenants (environments), their ports, keys and archived logs.
ALTER TABLE environments SET SCHEMA provisioner;
ALTER TABLE tenant_ports SET SCHEMA provisioner;
ALTER TABLE provisioner_keys SET SCHEMA provisioner;
ALTER TABLE tenant_secrets SET SCHEMA provisioner;
ALTER TABLE tenant_logs SET SCHEMA provisioner;

-- The converger: tasks, their turns and rounds, webhooks.
ALTER TABLE convergence_tasks SET SCHEMA converger;
ALTER TABLE convergence_turns SET SCHEMA converger;
ALTER TABLE convergence_rounds SET SCHEMA converger;
ALTER TABLE webhook_secrets SET SCHEMA converger;
ALTER TABLE webhook_deliveries SET SCHEMA converger;

-- Metering: the ledger, prices, rollups and lifecycle facts.
ALTER TABLE metering_price_versions SET SCHEMA metering;
ALTER TABLE metering_ledger SET SCHEMA metering;
ALTER TABLE metering_rollup_daily SET SCHEMA metering;
ALTER TABLE metering_rollup_monthly SET SCHEMA metering;
ALTER TABLE metering_rollup_pending SET SCHEMA metering;
ALTER TABLE metering_lifecycle_facts SET SCHEMA metering;
ALTER TABLE metering_runtime SET SCHEMA metering;
ALTER TABLE metering_unpriced_models SET SCHEMA metering;

DROP TABLE processed_events;

-- The API's record of the convergence tasks it accepted: whose each is and the request it sent
-- the converger (the converge.request event's data), so it answers for a task whose request is
-- still on its way, and can cancel it. The converger records the task itself on arrival.
CREATE TABLE api.tasks (
    id         TEXT COLLATE "C" PRIMARY KEY,
    env_id     BIGINT NOT NULL,
    org_id     BIGINT NOT NULL,
    request    JSON NOT NULL,
    request_id TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- What the API authenticates tenants with: each key's SHA-256 digest and whose it is. A key is
-- revoked the moment its tenant's destroy is asked for.
CREATE TABLE api.tenant_keys (
    digest     BYTEA PRIMARY KEY,
    env_id     BIGINT NOT NULL,
    org_id     BIGINT NOT NULL,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
CREATE INDEX tenant_keys_env ON api.tenant_keys (env_id);
INSERT INTO api.tenant_keys (digest, env_id, org_id, name, prefix, created_at, revoked_at)
SELECT api_key_hash, id, org_id, name, coalesce(api_key_prefix, ''), created_at,
    CASE WHEN status = 'destroyed' OR desired_status = 'destroyed' THEN coalesce(destroyed_at, updated_at) END
FROM provisioner.environments WHERE api_key_hash IS NOT NULL;

INSERT INTO api.tasks (id, env_id, org_id, request, request_id, created_at)
SELECT id, env_id, org_id, (request || jsonb_build_object('taskId', id, 'envId', env_id, 'orgId', org_id))::json,
    request_id, created_at
FROM converger.convergence_tasks;

-- Foreign keys that crossed services.
ALTER TABLE provisioner.environments DROP CONSTRAINT environments_org_id_fkey;
ALTER TABLE converger.convergence_tasks DROP CONSTRAINT convergence_tasks_env_id_fkey;
ALTER TABLE converger.convergence_tasks DROP CONSTRAINT convergence_tasks_org_id_fkey;
ALTER TABLE converger.webhook_secrets DROP CONSTRAINT webhook_secrets_env_id_fkey;
ALTER TABLE api.api_rate_limits DROP CONSTRAINT api_rate_limits_env_id_fkey;

-- The outboxes of the services that write events besides the API. Their shape is the API's
-- (migration 00001).
CREATE TABLE provisioner.outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON provisioner.outbox (id) WHERE published_at IS NULL;

CREATE TABLE converger.outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON converger.outbox (id) WHERE published_at IS NULL;

-- Events not yet published move to the outbox of the service that now sends them, in their
-- order. Published rows stay where they are until the API's relay prunes them.
WITH moved AS (
    DELETE FROM api.outbox WHERE published_at IS NULL AND subject LIKE 'tenant.lifecycle.%'
    RETURNING id, event_id, subject, payload, created_at)
INSERT INTO provisioner.outbox (event_id, subject, payload, created_at)
SELECT event_id, subject, payload, created_at FROM moved ORDER BY id;

WITH moved AS (
    DELETE FROM api.outbox WHERE published_at IS NULL AND subject IN ('converge.completed', 'converge.failed')
    RETURNING id, event_id, subject, payload, created_at)
INSERT INTO converger.outbox (event_id, subject, payload, created_at)
SELECT event_id, subject, payload, created_at FROM moved ORDER BY id;

-- The roles. They are the cluster's, not the database's, so a second database on the same
-- server finds them made. They cannot log in: a service's connection logs in as a member
-- (the migrating role is made one) and takes the role with SET ROLE.
-- +goose StatementBegin
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['convergence_api', 'convergence_provisioner', 'convergence_converger', 'convergence_metering'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- made meanwhile by the migration of another database
            END;
        END IF;
        IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', r, current_user);
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- Each role may use its own schema's tables and sequences, and those made there later.
GRANT USAGE ON SCHEMA api TO convergence_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA api TO convergence_api;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA api TO convergence_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA api GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO convergence_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA api GRANT USAGE, SELECT ON SEQUENCES TO convergence_api;

GRANT USAGE ON SCHEMA provisioner TO convergence_provisioner;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA provisioner TO convergence_provisioner;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA provisioner TO convergence_provisioner;
ALTER DEFAULT PRIVILEGES IN SCHEMA provisioner GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO convergence_provisioner;
ALTER DEFAULT PRIVILEGES IN SCHEMA provisioner GRANT USAGE, SELECT ON SEQUENCES TO convergence_provisioner;

GRANT USAGE ON SCHEMA converger TO convergence_converger;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA converger TO convergence_converger;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA converger TO convergence_converger;
ALTER DEFAULT PRIVILEGES IN SCHEMA converger GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO convergence_converger;
ALTER DEFAULT PRIVILEGES IN SCHEMA converger GRANT USAGE, SELECT ON SEQUENCES TO convergence_converger;

-- Metering rebuilds its rollups with LOCK TABLE and TRUNCATE.
GRANT USAGE ON SCHEMA metering TO convergence_metering;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA metering TO convergence_metering;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA metering TO convergence_metering;
ALTER DEFAULT PRIVILEGES IN SCHEMA metering GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO convergence_metering;
ALTER DEFAULT PRIVILEGES IN SCHEMA metering GRANT USAGE, SELECT ON SEQUENCES TO convergence_metering;


-- +goose Down

CREATE TABLE public.processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

INSERT INTO api.outbox (event_id, subject, payload, created_at)
SELECT event_id, subject, payload, created_at FROM (
    SELECT event_id, subject, payload, created_at FROM provisioner.outbox WHERE published_at IS NULL
    UNION ALL
    SELECT event_id, subject, payload, created_at FROM converger.outbox WHERE published_at IS NULL) AS o
ORDER BY created_at;
DROP TABLE provisioner.outbox;
DROP TABLE converger.outbox;
DROP TABLE api.tasks;
DROP TABLE api.tenant_keys;

ALTER TABLE api.api_rate_limits ADD CONSTRAINT api_rate_limits_env_id_fkey
    FOREIGN KEY (env_id) REFERENCES provisioner.environments (id) ON DELETE CASCADE;
ALTER TABLE converger.webhook_secrets ADD CONSTRAINT webhook_secrets_env_id_fkey
    FOREIGN KEY (env_id) REFERENCES provisioner.environments (id) ON DELETE CASCADE;
ALTER TABLE converger.convergence_tasks ADD CONSTRAINT convergence_tasks_org_id_fkey
    FOREIGN KEY (org_id) REFERENCES api.organizations (id);
ALTER TABLE converger.convergence_tasks ADD CONSTRAINT convergence_tasks_env_id_fkey
    FOREIGN KEY (env_id) REFERENCES provisioner.environments (id);
ALTER TABLE provisioner.environments ADD CONSTRAINT environments_org_id_fkey
    FOREIGN KEY (org_id) REFERENCES api.organizations (id);

ALTER TABLE metering.metering_unpriced_models SET SCHEMA public;
ALTER TABLE metering.metering_runtime SET SCHEMA public;
ALTER TABLE metering.metering_lifecycle_facts SET SCHEMA public;
ALTER TABLE metering.metering_rollup_pending SET SCHEMA public;
ALTER TABLE metering.metering_rollup_monthly SET SCHEMA public;
ALTER TABLE metering.metering_rollup_daily SET SCHEMA public;
ALTER TABLE metering.metering_ledger SET SCHEMA public;
ALTER TABLE metering.metering_price_versions SET SCHEMA public;
ALTER TABLE converger.webhook_deliveries SET SCHEMA public;
ALTER TABLE converger.webhook_secrets SET SCHEMA public;
ALTER TABLE converger.convergence_rounds SET SCHEMA public;
ALTER TABLE converger.convergence_turns SET SCHEMA public;
ALTER TABLE converger.convergence_tasks SET SCHEMA public;
ALTER TABLE provisioner.tenant_logs SET SCHEMA public;
ALTER TABLE provisioner.tenant_secrets SET SCHEMA public;
ALTER TABLE provisioner.provisioner_keys SET SCHEMA public;
ALTER TABLE provisioner.tenant_ports SET SCHEMA public;
ALTER TABLE provisioner.environments SET SCHEMA public;
ALTER TABLE api.outbox SET SCHEMA public;
ALTER TABLE api.api_rate_limits SET SCHEMA public;
ALTER TABLE api.api_rate_buckets SET SCHEMA public;
ALTER TABLE api.organizations SET SCHEMA public;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM convergence_api, convergence_provisioner, convergence_converger, convergence_metering;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM convergence_api, convergence_provisioner, convergence_converger, convergence_metering;
DROP SCHEMA metering;
DROP SCHEMA converger;
DROP SCHEMA api;
DROP SCHEMA provisioner;
