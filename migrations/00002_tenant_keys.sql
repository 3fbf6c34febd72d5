-- +goose Up
-- Tenant API keys are stored as SHA-256 digests, never in plaintext: the key is 256 random bits,
-- so a fast unsalted digest is enough to make a leaked table useless. The prefix is kept to
-- show which key is which.
ALTER TABLE environments
    ADD COLUMN api_key_hash   BYTEA UNIQUE,
    ADD COLUMN api_key_prefix TEXT;
ALTER TABLE environments DROP COLUMN api_key;

-- +goose Down
ALTER TABLE environments ADD COLUMN api_key TEXT;
ALTER TABLE environments DROP COLUMN api_key_prefix, DROP COLUMN api_key_hash;
