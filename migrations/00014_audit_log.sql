-- +goose Up
-- The audit log: every operator and key action, who did it (the admin token's id or the
-- tenant key's), on what, from where, and how it ended. Append-only: the API's role may insert
-- and read it, never change or remove a row, and a trigger refuses that to every role.
CREATE TABLE api.audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    org_id     BIGINT,
    env_id     BIGINT,
    target     TEXT NOT NULL,
    request_id TEXT,
    client     TEXT,
    status     INT NOT NULL,
    outcome    TEXT NOT NULL
);
CREATE INDEX audit_log_org ON api.audit_log (org_id, id) WHERE org_id IS NOT NULL;
CREATE INDEX audit_log_env ON api.audit_log (env_id, id) WHERE env_id IS NOT NULL;
CREATE INDEX audit_log_at ON api.audit_log (at);
REVOKE ALL ON api.audit_log FROM convergence_api;
GRANT SELECT, INSERT ON api.audit_log TO convergence_api;

-- +goose StatementBegin
CREATE FUNCTION api.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % is refused', TG_OP;
END $$;
-- +goose StatementEnd
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON api.audit_log
    FOR EACH ROW EXECUTE FUNCTION api.audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON api.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION api.audit_log_append_only();

-- +goose Down
DROP TABLE api.audit_log;
DROP FUNCTION api.audit_log_append_only();
