-- +goose Up
-- Plans with quotas (services/api/plans.go): an organization's tenant quota is its plan's unless
-- it has one of its own, so max_tenants may be NULL; organizations made before keep theirs. The
-- default organization moves to the plan that sets no limits of its own, so it works as before.
ALTER TABLE api.organizations ALTER COLUMN max_tenants DROP NOT NULL, ALTER COLUMN max_tenants DROP DEFAULT;
UPDATE api.organizations SET plan = 'unlimited', updated_at = now() WHERE name = 'default' AND plan = 'free';

-- An organization's tasks in flight, counted for its view.
CREATE INDEX tasks_unfinished_org ON api.tasks (org_id, created_at) WHERE finished_at IS NULL;

-- +goose Down
DROP INDEX api.tasks_unfinished_org;
UPDATE api.organizations SET plan = 'free' WHERE name = 'default' AND plan = 'unlimited';
UPDATE api.organizations SET max_tenants = 100 WHERE max_tenants IS NULL;
ALTER TABLE api.organizations ALTER COLUMN max_tenants SET DEFAULT 100, ALTER COLUMN max_tenants SET NOT NULL;
