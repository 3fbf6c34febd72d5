-- +goose Up
-- Invoices, per organization and calendar month (UTC), made from the ledger by the metering.
-- A draft's lines are computed when it is made (and again when it is finalized); finalizing
-- numbers the invoice from a gapless counter, freezes its lines, and marks each ledger line it
-- bills in invoice_items, whose key bills a ledger line once: usage recorded later for a
-- finalized month is not in it and goes onto the organization's next invoice as an adjustment.
CREATE TABLE metering.invoices (
    id           BIGSERIAL PRIMARY KEY,
    org_id       BIGINT NOT NULL,
    period       DATE NOT NULL CHECK (period = date_trunc('month', period)::date),
    status       TEXT NOT NULL CHECK (status IN ('draft', 'finalized')),
    number       BIGINT UNIQUE,
    currency     TEXT NOT NULL,
    total_micros BIGINT NOT NULL,
    lines        JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finalized_at TIMESTAMPTZ,
    CHECK ((status = 'finalized') = (number IS NOT NULL AND finalized_at IS NOT NULL))
);
-- One invoice per organization and month: a draft, until it is finalized.
CREATE UNIQUE INDEX invoices_org_period ON metering.invoices (org_id, period);

CREATE TABLE metering.invoice_items (
    event_id   TEXT COLLATE "C" NOT NULL,
    line       SMALLINT NOT NULL,
    invoice_id BIGINT NOT NULL REFERENCES metering.invoices (id),
    PRIMARY KEY (event_id, line)
);
CREATE INDEX invoice_items_invoice ON metering.invoice_items (invoice_id);

-- The last invoice number given; finalizing takes the next under this row's lock.
CREATE TABLE metering.invoice_numbers (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    last BIGINT NOT NULL
);
INSERT INTO metering.invoice_numbers (last) VALUES (0);

GRANT SELECT, INSERT, UPDATE, DELETE ON metering.invoices, metering.invoice_items, metering.invoice_numbers TO convergence_metering;
GRANT USAGE, SELECT ON SEQUENCE metering.invoices_id_seq TO convergence_metering;

-- The organization's ledger lines up to a month's end, for its invoice.
CREATE INDEX metering_ledger_org_occurred ON metering.metering_ledger (org_id, occurred_at);

-- +goose Down
DROP INDEX metering.metering_ledger_org_occurred;
DROP TABLE metering.invoice_numbers;
DROP TABLE metering.invoice_items;
DROP TABLE metering.invoices;
