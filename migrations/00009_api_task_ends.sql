-- +goose Up
-- When each task the API accepted ended, as the converger's result events say: the API counts
-- a tenant's unfinished tasks against its cap from it.
ALTER TABLE api.tasks ADD COLUMN finished_at TIMESTAMPTZ;
UPDATE api.tasks a SET finished_at = c.finished_at
FROM converger.convergence_tasks c WHERE c.id = a.id AND c.finished_at IS NOT NULL;
-- Tasks older than a day that the converger never ended will not end now; they count no more.
UPDATE api.tasks SET finished_at = now() WHERE finished_at IS NULL AND created_at < now() - interval '1 day';
CREATE INDEX tasks_unfinished ON api.tasks (env_id, created_at) WHERE finished_at IS NULL;

-- record_task records a task the API accepted, unless its tenant already has cap unfinished
-- tasks (of the last day): then it raises 'CV429', which aborts the transaction, and with it
-- the task's converge.request in the outbox. Concurrent calls for one tenant take turns.
-- +goose StatementBegin
CREATE FUNCTION api.record_task(id text, env_id bigint, org_id bigint, request json, request_id text, cap int)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('api.tasks'), record_task.env_id::int);
    IF (SELECT count(*) FROM api.tasks t
        WHERE t.env_id = record_task.env_id AND t.finished_at IS NULL AND t.created_at > now() - interval '1 day') >= cap THEN
        RAISE EXCEPTION 'tenant % has % unfinished tasks, its cap', record_task.env_id, cap USING ERRCODE = 'CV429';
    END IF;
    INSERT INTO api.tasks (id, env_id, org_id, request, request_id)
    VALUES (record_task.id, record_task.env_id, record_task.org_id, record_task.request, NULLIF(record_task.request_id, ''));
END
$$;
-- +goose StatementEnd
GRANT EXECUTE ON FUNCTION api.record_task(text, bigint, bigint, json, text, int) TO convergence_api;

-- +goose Down
DROP FUNCTION api.record_task(text, bigint, bigint, json, text, int);
DROP INDEX api.tasks_unfinished;
ALTER TABLE api.tasks DROP COLUMN finished_at;
