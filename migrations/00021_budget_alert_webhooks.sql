-- +goose Up
-- A tenant's budget may name a webhook URL that its alerts are delivered to, signed with the
-- tenant's webhook secret by the converger, which delivers webhooks: deliveries are no longer
-- only tasks' results.
ALTER TABLE api.budgets ADD COLUMN webhook_url TEXT;
ALTER TABLE converger.webhook_deliveries ALTER COLUMN task_id DROP NOT NULL;

-- +goose Down
DELETE FROM converger.webhook_deliveries WHERE task_id IS NULL;
ALTER TABLE converger.webhook_deliveries ALTER COLUMN task_id SET NOT NULL;
ALTER TABLE api.budgets DROP COLUMN webhook_url;
