-- +goose Up
-- The metering's usage ledger, its price versions, and the rollups the usage API reads.
--
-- Exactly once: a source event (converge.completed / converge.failed, tenant.lifecycle.*) is
-- recorded in the same transaction as the rollups it moves, under a unique key on its event
-- ID: line 0 of its ledger rows for task usage, its metering_lifecycle_facts row for a
-- lifecycle fact. A redelivered or republished event hits the key and changes nothing.
--
-- Reads never scan the ledger: the usage API sums metering_rollup_monthly for whole months
-- and metering_rollup_daily for the days at either end of a range, plus the rollup deltas not
-- merged yet (metering_rollup_pending) and the open run segments of metering_runtime. The
-- rollups are the ledger's sums, line for line (RebuildRollups recomputes them from the
-- ledger), so the ledger stays the record and the rollups an index.
--
-- An ingest transaction appends its rollup deltas, one row per UTC day, tenant and model it
-- touched, to metering_rollup_pending, which has no index and no key: appending costs what a
-- COPY costs, and two replicas never wait on each other's rollup rows. A merge (MergeRollups,
-- run by one replica at a time every second) moves the pending deltas into the daily and
-- monthly rollups in one transaction, so a reader sees each delta in exactly one place.

-- metering_price_versions holds every price table the metering has charged at. A version is
-- identified by the digest of its canonical content; its label is the operator's name for it
-- and may not be reused for different prices. Versions are never deleted: ledger rows name
-- them.
CREATE TABLE metering_price_versions (
    id                      BIGSERIAL PRIMARY KEY,
    label                   TEXT NOT NULL UNIQUE,
    digest                  BYTEA NOT NULL UNIQUE,
    currency                TEXT NOT NULL,
    container_second_micros BIGINT NOT NULL,
    document                JSONB NOT NULL, -- the canonical price table, loadable by any process
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    activated_at            TIMESTAMPTZ NOT NULL DEFAULT now() -- last time a process loaded it
);

-- metering_ledger is append-only. A task's usage is one line per agent usage (provider,
-- model) of its converge.completed or converge.failed event; line 0 also counts the task
-- (tasks = 1), its status and its score. A lifecycle fact that moves billed run time writes one
-- container line per UTC day the time falls in (negative when a late fact shortens a run). A
-- reconciliation repair writes task lines under a 'reconcile:' event ID, or 'adjustment'
-- lines for the difference from the converger's record.
--
-- cost_micros is NULL for usage of a model the price version did not price: unpriced, never
-- zero. price_version_id is stamped on every row. There are no foreign keys: the ledger takes
-- its facts from events, and ingest speed matters more than a check the event already made.
CREATE TABLE metering_ledger (
    -- IDs compare byte by byte (COLLATE "C"): they have no language, and a unique index on
    -- them is written for every event, so its comparisons should be the cheapest there are.
    event_id         TEXT COLLATE "C" NOT NULL,
    line             SMALLINT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('task', 'container', 'adjustment')),
    env_id           BIGINT NOT NULL,
    org_id           BIGINT NOT NULL,
    task_id          TEXT COLLATE "C",
    occurred_at      TIMESTAMPTZ NOT NULL, -- task: finished; container: start of the time
    ended_at         TIMESTAMPTZ,          -- container: end of the time
    provider         TEXT NOT NULL DEFAULT '',
    model            TEXT NOT NULL DEFAULT '',
    agent            TEXT NOT NULL DEFAULT '',
    calls            BIGINT NOT NULL DEFAULT 0,
    tasks            SMALLINT NOT NULL DEFAULT 0,
    task_status      TEXT CHECK (task_status IN ('completed', 'failed')),
    score            DOUBLE PRECISION,
    input_tokens     BIGINT NOT NULL DEFAULT 0,
    output_tokens    BIGINT NOT NULL DEFAULT 0,
    cached_tokens    BIGINT NOT NULL DEFAULT 0,
    total_tokens     BIGINT NOT NULL DEFAULT 0,
    container_ms     BIGINT NOT NULL DEFAULT 0,
    price_version_id BIGINT NOT NULL,
    cost_micros      BIGINT,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The exactly-once key of task usage: one line 0 per source event...
CREATE UNIQUE INDEX metering_ledger_event ON metering_ledger (event_id) WHERE line = 0;
-- ...and one counted record per task, so a task reported twice under two event IDs (say, by a
-- reconciliation repair and then by its late event) is billed once. tasks = 1 is exactly the
-- counted line 0 of a task, and cheaper to test on every row than kind and line.
CREATE UNIQUE INDEX metering_ledger_task ON metering_ledger (task_id) WHERE tasks = 1;
-- Reconciliation and repricing read a period of the ledger. Rows arrive in about time order,
-- which a BRIN index serves for almost no cost at ingest.
CREATE INDEX metering_ledger_occurred ON metering_ledger USING brin (occurred_at);

-- The rollups: the ledger's sums per UTC day (and month), tenant, provider and model. Container
-- time has an empty provider and model. Tasks and scores count under the model of their line
-- 0. A fill factor below 100 leaves room on each page for the in-place (HOT) updates a merge
-- makes, which then touch no index.
CREATE TABLE metering_rollup_daily (
    day             DATE NOT NULL,
    env_id          BIGINT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    org_id          BIGINT NOT NULL,
    calls           BIGINT NOT NULL DEFAULT 0,
    tasks           BIGINT NOT NULL DEFAULT 0,
    failed_tasks    BIGINT NOT NULL DEFAULT 0,
    score_sum       DOUBLE PRECISION NOT NULL DEFAULT 0,
    score_count     BIGINT NOT NULL DEFAULT 0,
    input_tokens    BIGINT NOT NULL DEFAULT 0,
    output_tokens   BIGINT NOT NULL DEFAULT 0,
    cached_tokens   BIGINT NOT NULL DEFAULT 0,
    total_tokens    BIGINT NOT NULL DEFAULT 0,
    container_ms    BIGINT NOT NULL DEFAULT 0,
    cost_micros     BIGINT NOT NULL DEFAULT 0,
    unpriced_calls  BIGINT NOT NULL DEFAULT 0,
    unpriced_tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, env_id, provider, model)
) WITH (fillfactor = 70);
CREATE INDEX metering_rollup_daily_org ON metering_rollup_daily (org_id, day);
CREATE INDEX metering_rollup_daily_env ON metering_rollup_daily (env_id, day);

CREATE TABLE metering_rollup_monthly (
    month           DATE NOT NULL, -- the first day of the month
    env_id          BIGINT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    org_id          BIGINT NOT NULL,
    calls           BIGINT NOT NULL DEFAULT 0,
    tasks           BIGINT NOT NULL DEFAULT 0,
    failed_tasks    BIGINT NOT NULL DEFAULT 0,
    score_sum       DOUBLE PRECISION NOT NULL DEFAULT 0,
    score_count     BIGINT NOT NULL DEFAULT 0,
    input_tokens    BIGINT NOT NULL DEFAULT 0,
    output_tokens   BIGINT NOT NULL DEFAULT 0,
    cached_tokens   BIGINT NOT NULL DEFAULT 0,
    total_tokens    BIGINT NOT NULL DEFAULT 0,
    container_ms    BIGINT NOT NULL DEFAULT 0,
    cost_micros     BIGINT NOT NULL DEFAULT 0,
    unpriced_calls  BIGINT NOT NULL DEFAULT 0,
    unpriced_tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (month, env_id, provider, model),
    CHECK (month = date_trunc('month', month)::date)
) WITH (fillfactor = 70);
CREATE INDEX metering_rollup_monthly_org ON metering_rollup_monthly (org_id, month);
CREATE INDEX metering_rollup_monthly_env ON metering_rollup_monthly (env_id, month);

-- metering_rollup_pending holds rollup deltas written by ingest and not merged yet: a few
-- seconds' worth, scanned whole by readers. It is emptied by DELETE, so vacuum it often.
CREATE TABLE metering_rollup_pending (
    day             DATE NOT NULL,
    env_id          BIGINT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    org_id          BIGINT NOT NULL,
    calls           BIGINT NOT NULL,
    tasks           BIGINT NOT NULL,
    failed_tasks    BIGINT NOT NULL,
    score_sum       DOUBLE PRECISION NOT NULL,
    score_count     BIGINT NOT NULL,
    input_tokens    BIGINT NOT NULL,
    output_tokens   BIGINT NOT NULL,
    cached_tokens   BIGINT NOT NULL,
    total_tokens    BIGINT NOT NULL,
    container_ms    BIGINT NOT NULL,
    cost_micros     BIGINT NOT NULL,
    unpriced_calls  BIGINT NOT NULL,
    unpriced_tokens BIGINT NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000);

-- metering_lifecycle_facts keeps every tenant lifecycle fact metering has seen: the
-- exactly-once key of lifecycle events, and the timeline a late fact is placed into.
CREATE TABLE metering_lifecycle_facts (
    event_id    TEXT COLLATE "C" PRIMARY KEY,
    env_id      BIGINT NOT NULL,
    org_id      BIGINT NOT NULL,
    state       TEXT NOT NULL,
    up          BOOLEAN NOT NULL, -- billable: the container runs (running, unhealthy)
    at          TIMESTAMPTZ NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX metering_lifecycle_facts_timeline ON metering_lifecycle_facts (env_id, at, event_id);

-- metering_runtime is each tenant's latest lifecycle fact. When that fact is billable the
-- tenant has an open run segment from last_at: not yet in the ledger, added by the usage API up
-- to the time of the read at the price of price_version_id, and booked to the ledger by the
-- fact that ends it. The row is also the lock that orders a tenant's facts.
CREATE TABLE metering_runtime (
    env_id           BIGINT PRIMARY KEY,
    org_id           BIGINT NOT NULL,
    last_at          TIMESTAMPTZ,
    last_event_id    TEXT,
    last_up          BOOLEAN NOT NULL DEFAULT false,
    price_version_id BIGINT,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX metering_runtime_open ON metering_runtime (org_id) WHERE last_up;

-- metering_unpriced_models flags every provider and model that usage arrived for without a
-- price, with the usage still unpriced; repricing (a reconciliation repair) takes it down.
CREATE TABLE metering_unpriced_models (
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    lines         BIGINT NOT NULL DEFAULT 0,
    calls         BIGINT NOT NULL DEFAULT 0,
    total_tokens  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, model)
);

-- +goose Down
DROP TABLE metering_unpriced_models;
DROP TABLE metering_runtime;
DROP TABLE metering_lifecycle_facts;
DROP TABLE metering_rollup_pending;
DROP TABLE metering_rollup_monthly;
DROP TABLE metering_rollup_daily;
DROP TABLE metering_ledger;
DROP TABLE metering_price_versions;
