-- +goose Up
-- usage.recorded events, published from the ledger itself, so that recording usage writes
-- nothing twice. Each ledger row carries the id of the transaction that wrote it (xact); the
-- metering publishes, in order, the rows of the transactions below the database's snapshot
-- horizon (pg_snapshot_xmin: every transaction below it has ended, so no row of one can still
-- appear), then moves usage_publication's cursor past them. Rows written before this migration
-- have no xact and are not published.
ALTER TABLE metering.metering_ledger ADD COLUMN xact BIGINT;
ALTER TABLE metering.metering_ledger ALTER COLUMN xact SET DEFAULT (pg_current_xact_id()::text)::bigint;
-- Transaction ids grow with the rows' order on disk, which a BRIN index serves at almost no
-- cost to ingest.
CREATE INDEX metering_ledger_xact ON metering.metering_ledger USING brin (xact);

-- The first transaction id not published yet.
CREATE TABLE metering.usage_publication (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    xact BIGINT NOT NULL
);
INSERT INTO metering.usage_publication (xact) VALUES ((pg_current_xact_id()::text)::bigint);
GRANT SELECT, UPDATE ON metering.usage_publication TO convergence_metering;

-- +goose Down
DROP TABLE metering.usage_publication;
DROP INDEX metering.metering_ledger_xact;
ALTER TABLE metering.metering_ledger DROP COLUMN xact;
