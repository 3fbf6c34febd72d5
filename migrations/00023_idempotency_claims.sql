-- +goose Up
-- A request that holds an operator's Idempotency-Key while it runs holds it as a lease under a
-- claim of its own: its renewals, the answer it keeps or the key it gives back touch only its
-- own claim, never that of a retry that took the key after its lease lapsed.
ALTER TABLE api.operator_idempotency_keys ADD COLUMN claim UUID;

-- +goose Down
ALTER TABLE api.operator_idempotency_keys DROP COLUMN claim;
