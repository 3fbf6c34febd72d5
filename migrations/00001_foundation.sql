-- +goose Up
-- The foundation: organizations and environments (tenants) as the original design has them,
-- the transactional outbox, and the processed-event keys that make consumers idempotent.

CREATE TABLE organizations (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    plan       TEXT NOT NULL DEFAULT 'free',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO organizations (name, plan) VALUES ('default', 'free');

CREATE TABLE environments (
    id             BIGSERIAL PRIMARY KEY,
    org_id         BIGINT NOT NULL REFERENCES organizations (id),
    name           TEXT NOT NULL,
    status         TEXT NOT NULL,
    container_name TEXT,
    port           INTEGER,
    api_key        TEXT, -- never the plaintext key: see api_key_hash
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- outbox holds events written in the same transaction as the change they describe. The relay
-- publishes unpublished rows in id order and stamps published_at after JetStream's PubAck.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- processed_events records, per consumer, every event whose effect has been committed. A
-- consumer inserts its key in the same transaction as the effect; a duplicate key means the
-- effect is already there and the message only needs its ack.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- +goose Down
DROP TABLE processed_events;
DROP TABLE outbox;
DROP TABLE environments;
DROP TABLE organizations;
