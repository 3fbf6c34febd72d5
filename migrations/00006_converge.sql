-- +goose Up
-- Dual-agent convergence: what the converger persists while a task runs (so a restarted
-- converger resumes it and a late SSE client gets the rounds so far), tenants' webhook secrets
-- and delivery records, and the API's rate-limit buckets.

-- run is the fencing token of the converger run that owns a running task: every claim
-- increments it, and every write of a run names the run it belongs to and takes a share lock on
-- the task's row while it checks it, so a converger that lost the task to another (its message
-- was redelivered) can neither add turns nor finish the task. rounds is set when the task
-- finishes; while it runs, its rounds so far are the rows of convergence_rounds.
-- cancel_requested_at is the durable half of a cancellation; the core-NATS cancel message is
-- the fast half.
ALTER TABLE convergence_tasks
    ADD COLUMN run                 INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN cancel_requested_at TIMESTAMPTZ;

-- convergence_turns holds every agent turn of a task as the engine reported it (engine.Turn as
-- JSON, the provider's raw reply included), in the order the engine resumes from: A1, B1, A2,
-- B2, ..., then the synthesis. A turn is written before the next provider call is made, so a
-- converger that dies loses at most the call in flight, and the usage columns are exactly what
-- the provider billed for the turn. The documents are json, not jsonb: they are only ever read
-- back whole, and json skips the conversion on the hot write path.
CREATE TABLE convergence_turns (
    task_id       TEXT NOT NULL REFERENCES convergence_tasks (id) ON DELETE CASCADE,
    seq           SMALLINT NOT NULL CHECK (seq >= 0),
    round         SMALLINT NOT NULL,
    agent         TEXT NOT NULL CHECK (agent IN ('A', 'B', 'synthesis')),
    run           INTEGER NOT NULL,
    turn          JSON NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);

-- convergence_rounds holds each scored round as the API shows it (the progress event's
-- payload), so the SSE stream replays exactly what it streams live.
CREATE TABLE convergence_rounds (
    task_id    TEXT NOT NULL REFERENCES convergence_tasks (id) ON DELETE CASCADE,
    number     SMALLINT NOT NULL CHECK (number >= 1),
    score      SMALLINT NOT NULL,
    round      JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, number)
);

-- webhook_secrets holds each tenant's webhook signing secret (whsec_..., Standard Webhooks
-- format). It must be readable to sign with, so it is stored as is, like the admin token; it
-- authenticates the platform to the tenant, not the other way round. After a rotation the
-- previous secret keeps signing deliveries beside the new one until previous_expires_at, so a
-- receiver can switch without rejecting anything.
CREATE TABLE webhook_secrets (
    env_id              BIGINT PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
    secret              TEXT NOT NULL,
    previous_secret     TEXT,
    previous_expires_at TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    rotated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- webhook_deliveries is one POST of a task's final result to its webhook URL, with its
-- retries. It is written in the transaction that finishes the task (one per task: the unique
-- key makes a repeated finish a no-op). next_attempt_at doubles as the claim: a deliverer
-- moves it past the attempt's timeout when it takes the row, so a deliverer that dies
-- mid-attempt leaves the row to be retried, and two never attempt the same row at once. A
-- delivery is retried until the deliverer's retry period has passed since created_at.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL UNIQUE REFERENCES convergence_tasks (id) ON DELETE CASCADE,
    env_id           BIGINT NOT NULL,
    url              TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          BYTEA NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- api_rate_buckets holds one token bucket per tenant and class of endpoint, shared by every
-- API replica. A request takes a token with one atomic INSERT ... ON CONFLICT DO UPDATE that
-- refills the bucket by the time elapsed on the database's clock; the row lock orders
-- concurrent requests of a tenant, whichever replica they reach. rate (tokens per second) and
-- burst are the limits the last request applied; allowed is its verdict. The table is
-- UNLOGGED: a bucket is worth no WAL, and after a crash every bucket starts full again.
CREATE UNLOGGED TABLE api_rate_buckets (
    env_id     BIGINT NOT NULL,
    class      TEXT NOT NULL,
    tokens     DOUBLE PRECISION NOT NULL,
    rate       DOUBLE PRECISION NOT NULL,
    burst      DOUBLE PRECISION NOT NULL,
    allowed    BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, class)
);

-- api_rate_limits overrides the configured default rate and burst of a class for one tenant
-- (a bigger plan, a noisy tenant). The classes are 'converge.create' (POST /api/v1/converge
-- and its shortcuts) and 'converge.read' (task reads, progress streams, cancels, webhook
-- secrets).
CREATE TABLE api_rate_limits (
    env_id     BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    class      TEXT NOT NULL,
    per_minute DOUBLE PRECISION NOT NULL CHECK (per_minute > 0),
    burst      INTEGER NOT NULL CHECK (burst >= 1),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, class)
);

-- +goose Down
DROP TABLE api_rate_limits;
DROP TABLE api_rate_buckets;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_secrets;
DROP TABLE convergence_rounds;
DROP TABLE convergence_turns;
ALTER TABLE convergence_tasks DROP COLUMN cancel_requested_at, DROP COLUMN run;
