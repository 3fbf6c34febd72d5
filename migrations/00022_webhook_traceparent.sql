-- +goose Up
-- A webhook delivery keeps the W3C traceparent of the run or event that made it, so that its
-- attempts join that trace and the receiver is sent it.
ALTER TABLE converger.webhook_deliveries ADD COLUMN traceparent TEXT;

-- +goose Down
ALTER TABLE converger.webhook_deliveries DROP COLUMN traceparent;
