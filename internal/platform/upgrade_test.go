package platform_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/platform"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/migrations"
	"github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner"
)

// lastSharedSchemaVersion is the last migration of the releases in which every service's
// tables sat in one schema.
const lastSharedSchemaVersion = 6

// TestUpgrade_SharedSchemaDatabaseWithData_EveryRowKeptAndServed starts from a database as
// the release before the per-service schemas left it, with an organization, a tenant, a
// finished task with its rounds and webhook, usage in the ledger and events not yet relayed;
// a start of the platform migrates it, and the API serves every part of it.
func TestUpgrade_SharedSchemaDatabaseWithData_EveryRowKeptAndServed(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDB(t)
	require.NoError(t, migrations.UpTo(t.Context(), db.URL, lastSharedSchemaVersion))

	key, digest := apikey.New()
	taskID := taskspec.NewID()
	finished := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	request := `{"prompt":"Design a login page","type":"design","agentARole":"Security Expert","agentBRole":"UX Designer","maxRounds":3}`
	result := `{"converged":true,"stopReason":"converged","convergenceScore":91,"output":"Use passkeys.","rounds":1,
		"usage":{"inputTokens":120,"outputTokens":80,"cachedTokens":0,"totalTokens":200}}`
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO organizations (id, name, plan, max_tenants) VALUES (2, 'acme', 'pro', 5)`)
	b.Queue(`
		INSERT INTO environments (id, org_id, name, status, desired_status, image, port, api_key_hash, api_key_prefix,
			memory_bytes, nano_cpus, pids_limit, container_name)
		VALUES (7, 2, 'acme-web', 'running', 'running', 'convergence/tenant-go:dev', 3001, $1, $2,
			268435456, 500000000, 256, 'convergence-env-7')`, digest, apikey.Display(key))
	b.Queue(`UPDATE tenant_ports SET env_id = 7, leased_at = now() WHERE port = 3001`)
	b.Queue(`INSERT INTO tenant_logs (env_id, cause, logs) VALUES (7, 'spawn_failed', 'an earlier attempt')`)
	b.Queue(`
		INSERT INTO convergence_tasks (id, env_id, org_id, type, status, request, result, stop_reason, convergence_score,
			rounds, input_tokens, output_tokens, total_tokens, started_at, finished_at, run)
		VALUES ($1, 7, 2, 'design', 'completed', $2, $3, 'converged', 91, 1, 120, 80, 200, $4, $4, 1)`,
		taskID, request, result, finished)
	b.Queue(`INSERT INTO convergence_rounds (task_id, number, score, round) VALUES ($1, 1, 91, '{"round":1,"score":{"value":91}}')`, taskID)
	b.Queue(`INSERT INTO webhook_secrets (env_id, secret) VALUES (7, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')`)
	b.Queue(`
		INSERT INTO webhook_deliveries (id, task_id, env_id, url, event_type, payload, status, attempts)
		VALUES ('wh_1', $1, 7, 'https://example.invalid/hook', 'converge.completed', '{}', 'delivered', 1)`, taskID)
	b.Queue(`
		INSERT INTO metering_ledger (event_id, line, kind, env_id, org_id, task_id, occurred_at, provider, model, agent,
			calls, tasks, task_status, score, input_tokens, output_tokens, total_tokens, price_version_id, cost_micros)
		VALUES ('ev-completed', 0, 'task', 7, 2, $1, $2, 'simulated', 'sim-1', 'A', 2, 1, 'completed', 91, 120, 80, 200, 1, 0)`,
		taskID, finished)
	b.Queue(`
		INSERT INTO metering_rollup_pending (day, env_id, provider, model, org_id, calls, tasks, failed_tasks, score_sum,
			score_count, input_tokens, output_tokens, cached_tokens, total_tokens, container_ms, cost_micros,
			unpriced_calls, unpriced_tokens)
		VALUES ($1, 7, 'simulated', 'sim-1', 2, 2, 1, 0, 91, 1, 120, 80, 0, 200, 0, 0, 0, 0)`, finished)
	b.Queue(`
		INSERT INTO outbox (event_id, subject, payload, published_at) VALUES
			('ev-old', 'tenant.spawn', '{}', now()),
			('ev-spawn', 'tenant.spawn', '{}', NULL),
			('ev-running', 'tenant.lifecycle.running.7', '{}', NULL),
			('ev-completed', 'converge.completed', '{}', NULL)`)
	require.NoError(t, db.Pool.SendBatch(t.Context(), b).Close())

	// The provisioner only answers questions (ServeQueries): running, it would start
	// reconciling the recorded tenant, whose container this test never made.
	cfg := testConfig(t)
	cfg.Target = "api,converger,metering"
	cfg.DatabaseURL = db.URL
	cfg.DataDir = t.TempDir()
	cfg.NATSListen = freeAddr(t)
	start(t, cfg)
	serveProvisionerQueries(t, cfg, db)
	base := "http://" + cfg.HTTPAddr + "/api/v1"

	var orgs struct {
		Organization struct {
			Name        string `json:"name"`
			Plan        string `json:"plan"`
			MaxTenants  int    `json:"maxTenants"`
			LiveTenants int    `json:"liveTenants"`
		} `json:"organization"`
	}
	getJSON(t, base+"/orgs/2", cfg.API.AdminToken, &orgs)
	require.Equal(t, "acme", orgs.Organization.Name)
	require.Equal(t, "pro", orgs.Organization.Plan)
	require.Equal(t, 5, orgs.Organization.MaxTenants)
	require.Equal(t, 1, orgs.Organization.LiveTenants)

	var list struct {
		Tenants []struct {
			EnvID  int64  `json:"envId"`
			Name   string `json:"name"`
			Status string `json:"status"`
			Port   int    `json:"port"`
		} `json:"tenants"`
	}
	getJSON(t, base+"/tenant?orgId=2", cfg.API.AdminToken, &list)
	require.Len(t, list.Tenants, 1)
	require.Equal(t, int64(7), list.Tenants[0].EnvID)
	require.Equal(t, "acme-web", list.Tenants[0].Name)
	require.Equal(t, 3001, list.Tenants[0].Port)

	// The tenant's key still admits it, and its task is there with its result and rounds.
	var task struct {
		Task api.Task `json:"task"`
	}
	getJSON(t, base+"/converge/"+taskID, key, &task)
	require.Equal(t, api.TaskStatusCompleted, task.Task.Status)
	require.NotNil(t, task.Task.Result)
	require.Equal(t, 91, task.Task.Result.ConvergenceScore)
	require.Equal(t, "Use passkeys.", task.Task.Result.Output)
	require.Len(t, task.Task.Rounds, 1)
	require.NotNil(t, task.Task.Webhook)
	require.EqualValues(t, "delivered", task.Task.Webhook.Status)

	var secret struct {
		Webhook struct {
			Secret string `json:"secret"`
		} `json:"webhook"`
	}
	getJSON(t, base+"/webhooks/secret", key, &secret)
	require.Equal(t, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", secret.Webhook.Secret)

	var usage struct {
		Totals struct {
			Tasks       int64 `json:"tasks"`
			TotalTokens int64 `json:"totalTokens"`
		} `json:"totals"`
	}
	day := finished.Format(time.DateOnly)
	getJSON(t, fmt.Sprintf("%s/usage?orgId=2&from=%s&to=%s", base, day, day), cfg.API.AdminToken, &usage)
	require.Equal(t, int64(1), usage.Totals.Tasks)
	require.Equal(t, int64(200), usage.Totals.TotalTokens)

	// Events not yet relayed went to the outbox of the service that now sends them, whose relay
	// may have sent them since; the API's own stayed with it.
	var inAPI, inProvisioner, inConverger []string
	require.NoError(t, db.Pool.QueryRow(t.Context(), `
		SELECT (SELECT array_agg(event_id ORDER BY id) FROM api.outbox),
			(SELECT array_agg(event_id ORDER BY id) FROM provisioner.outbox),
			(SELECT array_agg(event_id ORDER BY id) FROM converger.outbox)`).
		Scan(&inAPI, &inProvisioner, &inConverger))
	require.Equal(t, []string{"ev-old", "ev-spawn"}, inAPI)
	require.Equal(t, []string{"ev-running"}, inProvisioner)
	require.Equal(t, []string{"ev-completed"}, inConverger)

	// Every row is where its owner reads it.
	var logs, ports, turns, ledgerRows int
	require.NoError(t, db.Pool.QueryRow(t.Context(), `
		SELECT (SELECT count(*) FROM provisioner.tenant_logs WHERE env_id = 7),
			(SELECT count(*) FROM provisioner.tenant_ports WHERE env_id = 7),
			(SELECT count(*) FROM converger.convergence_rounds WHERE task_id = $1),
			(SELECT count(*) FROM metering.metering_ledger WHERE task_id = $1)`, taskID).
		Scan(&logs, &ports, &turns, &ledgerRows))
	require.Equal(t, []int{1, 1, 1, 1}, []int{logs, ports, turns, ledgerRows})
}

// getJSON GETs url with a bearer token, requires 200 and decodes the body into v.
func getJSON(t *testing.T, url, token string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var raw json.RawMessage
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&raw))
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", url, raw)
	require.NoError(t, json.Unmarshal(raw, v), "GET %s: %s", url, raw)
}

// serveProvisionerQueries runs a provisioner that answers for tenants on the platform's bus but
// runs none, until the test ends.
func serveProvisionerQueries(t *testing.T, cfg platform.Config, db *pgtest.DB) {
	t.Helper()
	nc := connectAs(t, cfg, natsauth.Provisioner)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	pool := db.For(t, pgrole.Provisioner)
	pcfg := cfg.Provisioner
	pcfg.StateDir = t.TempDir()
	svc, err := provisioner.New(pcfg, provisioner.Deps{Pool: pool, Outbox: outbox.New(pool), NC: nc, JS: js,
		Docker: dockertest.Client(t), Logger: discard, Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.ServeQueries(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	asker := connectAs(t, cfg, natsauth.API)
	require.Eventually(t, func() bool {
		_, err := natsrpc.Call[events.TenantQuery, events.TenantView](t.Context(), asker, events.SubjectTenantGet, events.TenantQuery{EnvID: 7})
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "the provisioner answers")
}
