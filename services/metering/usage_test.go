package metering_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

func TestIngest_ContainerSecondsMatchTheLifecycleWithinASecond(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	midnight := time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return midnight.Add(d) }
	// Tenant 7: provisioned, running from 22:00:00.400 (unhealthy for a while, still billed),
	// stopped at 01:30 the next day; running again 09:00-09:00:30; destroyed.
	facts := []events.Envelope{
		lifecycle(7, 1, events.StateProvisioning, at(-2*time.Hour-5*time.Minute)),
		lifecycle(7, 1, events.StateRunning, at(-2*time.Hour+400*time.Millisecond)),
		lifecycle(7, 1, events.StateUnhealthy, at(-time.Hour)),
		lifecycle(7, 1, events.StateRunning, at(-30*time.Minute)),
		lifecycle(7, 1, events.StateStopped, at(90*time.Minute)),
		lifecycle(7, 1, events.StateRunning, at(9*time.Hour)),
		lifecycle(7, 1, events.StateDestroyed, at(9*time.Hour+30*time.Second)),
	}
	const wantBefore, wantAfter = 7199.6, 5400 + 30.0
	// Published out of order, some twice, as replicas and relays may deliver them.
	order := rand.New(rand.NewPCG(3, 4)).Perm(len(facts))
	for _, i := range order {
		f := facts[i]
		p.publish(events.LifecycleSubject(events.StateRunning, 7), f, "")
		if i%3 == 0 {
			p.publish(events.LifecycleSubject(events.StateRunning, 7), f, f.ID+"-again")
		}
	}
	// Tenant 8 is still running: its open time counts up to the moment of the read.
	p.publish(events.LifecycleSubject(events.StateRunning, 8), lifecycle(8, 1, events.StateRunning, at(time.Hour)), "")
	p.start(testConfig(), nil)
	p.drained(events.StreamTenantLifecycle, events.ConsumerMeteringLifecyle)

	now := at(3 * time.Hour)
	sum, err := ledger.Summarize(t.Context(), p.Pool, ledger.Query{
		From: midnight.AddDate(0, 0, -1), To: midnight, GroupBy: []ledger.Dimension{ledger.ByTenant, ledger.ByDay}, Now: now})
	require.NoError(t, err)
	require.Len(t, sum.Groups, 3)
	require.InDelta(t, wantBefore, sum.Groups[0].ContainerSeconds(), 1, "tenant 7, the first day")
	require.InDelta(t, wantAfter, sum.Groups[1].ContainerSeconds(), 1, "tenant 7, the second day")
	require.EqualValues(t, 8, sum.Groups[2].EnvID)
	require.InDelta(t, 2*3600, sum.Groups[2].ContainerSeconds(), 1, "tenant 8, open since 01:00, read at 03:00")
	require.InDelta(t, wantBefore+wantAfter, float64(p.count(`SELECT sum(container_ms) FROM metering_ledger WHERE env_id = 7`))/1000, 1)
	require.InDelta(t, (wantBefore+wantAfter+7200)*10, float64(sum.Totals.Cost), 3, "$0.00001 a second")
}

func TestIngest_UnpricedModel_ReportedNotChargedZero(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	mystery := events.AgentUsage{Agent: "A", Provider: "ollama", Model: "llama3:70b", Calls: 4,
		Usage: events.Usage{InputTokens: 9000, OutputTokens: 1000, TotalTokens: 10000}}
	p.publish(events.SubjectConvergeCompleted, completed("task-1", 7, 1, t0, mystery, sonnet("B", 1_000_000, 0)), "")
	in := p.start(testConfig(), nil)
	p.drained(events.StreamConvergeResults, events.ConsumerMeteringResults)

	require.InDelta(t, 1, in.metric("convergence_metering_unpriced_lines_total"), 0)
	require.InDelta(t, 10000, in.metric("convergence_metering_unpriced_tokens_total"), 0)
	require.InDelta(t, 1, in.metric("convergence_metering_unpriced_models"), 0)
	models, err := ledger.ListUnpriced(t.Context(), p.Pool, ledger.Prices{})
	require.NoError(t, err)
	require.Len(t, models, 1)
	require.Equal(t, "llama3:70b", models[0].Model)

	sum, err := ledger.Summarize(t.Context(), p.Pool, ledger.Query{From: t0.Truncate(24 * time.Hour), To: t0.Truncate(24 * time.Hour)})
	require.NoError(t, err)
	require.EqualValues(t, 3_000_000, sum.Totals.Cost, "only the priced sonnet line is in the cost")
	require.EqualValues(t, 10000, sum.Totals.UnpricedTokens, "and the rest is shown as unpriced")
	require.EqualValues(t, 1, p.count(`SELECT count(*) FROM metering_ledger WHERE cost_micros IS NULL AND model = 'llama3:70b'`))
}

// TestTotals_OrganizationsAreTheirTenants_TenantsAreTheirTasks checks, with SQL, the sums a
// bill rests on, after usage arrived through JetStream for tasks the converger recorded.
func TestTotals_OrganizationsAreTheirTenants_TenantsAreTheirTasks(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ctx := t.Context()
	var orgs [2]int64
	for i := range orgs {
		require.NoError(t, p.Pool.QueryRow(ctx, `INSERT INTO organizations (name) VALUES ($1) RETURNING id`, fmt.Sprint("org-", i)).Scan(&orgs[i]))
	}
	var tenants []int64
	for i := range 5 {
		var id int64
		require.NoError(t, p.Pool.QueryRow(ctx, `INSERT INTO environments (org_id, name, status) VALUES ($1, $2, 'running') RETURNING id`,
			orgs[i%2], fmt.Sprint("tenant-", i)).Scan(&id))
		tenants = append(tenants, id)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 200 {
		env := tenants[rng.IntN(len(tenants))]
		org := orgs[0]
		if p.count(`SELECT org_id FROM environments WHERE id = $1`, env) != org {
			org = orgs[1]
		}
		agents := []events.AgentUsage{sonnet("A", rng.Int64N(4000), rng.Int64N(900)), sonnet("B", rng.Int64N(4000), rng.Int64N(900))}
		ev := completed(fmt.Sprintf("task-%d", i), env, org, t0.Add(time.Duration(rng.IntN(72))*time.Hour), agents...)
		data, err := events.DataAs[events.ConvergeCompleted](ev)
		require.NoError(t, err)
		_, err = p.Pool.Exec(ctx, `
			INSERT INTO convergence_tasks (id, env_id, org_id, type, status, request, input_tokens, output_tokens,
				cached_tokens, total_tokens, convergence_score, finished_at)
			VALUES ($1, $2, $3, 'design', 'completed', '{}', $4, $5, $6, $7, $8, $9)`,
			data.TaskID, env, org, data.Usage.InputTokens, data.Usage.OutputTokens, data.Usage.CachedTokens,
			data.Usage.TotalTokens, data.ConvergenceScore, data.FinishedAt)
		require.NoError(t, err)
		p.publish(events.SubjectConvergeCompleted, ev, "")
	}
	p.start(testConfig(), nil)
	p.drained(events.StreamConvergeResults, events.ConsumerMeteringResults)

	// Tenant totals (rollups) equal the sum of their tasks' usage (the converger's records).
	require.Zero(t, p.count(`
		WITH tenant AS (
			SELECT env_id, sum(tasks) AS tasks, sum(input_tokens) AS i, sum(output_tokens) AS o,
				sum(cached_tokens) AS c, sum(total_tokens) AS t
			FROM metering_rollup_monthly GROUP BY env_id),
		task AS (
			SELECT env_id, count(*) AS tasks, sum(input_tokens) AS i, sum(output_tokens) AS o,
				sum(cached_tokens) AS c, sum(total_tokens) AS t
			FROM convergence_tasks GROUP BY env_id)
		SELECT count(*) FROM tenant FULL JOIN task USING (env_id)
		WHERE (tenant.tasks, tenant.i, tenant.o, tenant.c, tenant.t) IS DISTINCT FROM (task.tasks, task.i, task.o, task.c, task.t)`),
		"every tenant's totals are its tasks' usage")
	// Organization totals equal the sum of their tenants' totals, and the daily and monthly
	// rollups agree with each other and with the ledger.
	require.Zero(t, p.count(`
		WITH tenant AS (
			SELECT env_id, sum(total_tokens) AS t, sum(cost_micros) AS cost FROM metering_rollup_daily GROUP BY env_id),
		org_of_tenants AS (
			SELECT e.org_id, sum(tenant.t) AS t, sum(tenant.cost) AS cost FROM tenant JOIN environments e ON e.id = tenant.env_id GROUP BY e.org_id),
		org AS (
			SELECT org_id, sum(total_tokens) AS t, sum(cost_micros) AS cost FROM metering_rollup_monthly GROUP BY org_id),
		org_ledger AS (
			SELECT org_id, sum(total_tokens) AS t, sum(cost_micros) AS cost FROM metering_ledger GROUP BY org_id)
		SELECT count(*) FROM org FULL JOIN org_of_tenants USING (org_id) FULL JOIN org_ledger USING (org_id)
		WHERE (org.t, org.cost) IS DISTINCT FROM (org_of_tenants.t, org_of_tenants.cost)
			OR (org.t, org.cost) IS DISTINCT FROM (org_ledger.t, org_ledger.cost)`),
		"every organization's totals are its tenants'")

	// The summaries the API serves say the same.
	q := ledger.Query{From: t0.Truncate(24 * time.Hour), To: t0.Add(96 * time.Hour).Truncate(24 * time.Hour)}
	q.GroupBy = []ledger.Dimension{ledger.ByOrganization}
	byOrg, err := ledger.Summarize(ctx, p.Pool, q)
	require.NoError(t, err)
	q.GroupBy = []ledger.Dimension{ledger.ByTenant}
	byTenant, err := ledger.Summarize(ctx, p.Pool, q)
	require.NoError(t, err)
	require.Len(t, byOrg.Groups, 2)
	for _, og := range byOrg.Groups {
		var sum ledger.Totals
		for _, tg := range byTenant.Groups {
			if tg.OrgID == og.OrgID {
				sum.TotalTokens += tg.TotalTokens
				sum.Cost += tg.Cost
				sum.Tasks += tg.Tasks
			}
		}
		require.Equal(t, og.TotalTokens, sum.TotalTokens, "org %d", og.OrgID)
		require.Equal(t, og.Cost, sum.Cost, "org %d", og.OrgID)
		require.Equal(t, og.Tasks, sum.Tasks, "org %d", og.OrgID)
	}
	require.EqualValues(t, 200, byOrg.Totals.Tasks)
	avg, ok := byOrg.Totals.AverageScore()
	require.True(t, ok)
	require.InDelta(t, 87.5, avg, 1e-9)
}

func TestPrices_ChangedFileReloaded_BadFileKeepsThePricesInForce(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	path := filepath.Join(t.TempDir(), "prices.json")
	// Each version is written beside the file and renamed over it, as an operator's deploy
	// does, so the reloader never reads a half-written file.
	write := func(doc string) {
		require.NoError(t, os.WriteFile(path+".new", []byte(doc), 0o600))
		require.NoError(t, os.Rename(path+".new", path))
	}
	write(`{"version": "v1", "currency": "USD", "containerSecond": "0", "models": [
		{"provider": "anthropic", "model": "*", "inputPerMillion": "1", "outputPerMillion": "1"}]}`)
	cfg := testConfig()
	cfg.Prices, cfg.PricesReload = path, 20*time.Millisecond
	in := p.start(cfg, nil)
	require.Eventually(t, func() bool { return in.metric("convergence_metering_price_version") > 0 }, 10*time.Second, 10*time.Millisecond)
	v1 := in.metric("convergence_metering_price_version")

	p.publish(events.SubjectConvergeCompleted, completed("t1", 7, 1, t0, sonnet("A", 1_000_000, 0)), "")
	p.waitCount(1_000_000, `SELECT coalesce(sum(cost_micros), 0) FROM metering_ledger`)

	write(`{"version": "v2", "currency": "USD", "containerSecond": "0", "models": [
		{"provider": "anthropic", "model": "*", "inputPerMillion": "2", "outputPerMillion": "2"}]}`)
	require.Eventually(t, func() bool { return in.metric("convergence_metering_price_version") != v1 }, 10*time.Second, 10*time.Millisecond)
	p.publish(events.SubjectConvergeCompleted, completed("t2", 7, 1, t0, sonnet("A", 1_000_000, 0)), "")
	p.waitCount(2_000_000, `SELECT coalesce(sum(cost_micros), 0) FROM metering_ledger WHERE task_id = 't2'`)
	require.EqualValues(t, 2, p.count(`SELECT count(DISTINCT price_version_id) FROM metering_ledger`))

	v2 := in.metric("convergence_metering_price_version")
	write(`{"version": "v2", "currency": "USD", "containerSecond": "0", "models": []}`) // changed under the same label
	require.Eventually(t, func() bool { return in.metric("convergence_metering_price_reload_errors_total") == 1 }, 10*time.Second, 10*time.Millisecond)
	write(`{"version": "v3", "currency": "USD", "containerSecond": "0", "models": [{"provider": "x"}]}`) // invalid
	require.Eventually(t, func() bool { return in.metric("convergence_metering_price_reload_errors_total") == 2 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.InDelta(t, 2, in.metric("convergence_metering_price_reload_errors_total"), 0, "an unchanged bad file is reported once")
	require.InDelta(t, v2, in.metric("convergence_metering_price_version"), 0, "the prices in force stay")
}

func TestNew_BadPriceFile_FailsWithWhatIsWrong(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"version": "v", "currency": "USD", "models": []}`), 0o600))
	_, err := metering.New(metering.Config{Prices: path}, metering.Deps{Logger: discard})
	require.ErrorContains(t, err, `metering.prices: price file `+path+`: "containerSecond" is required`)
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	require.NoError(t, metering.Config{}.Validate(), "zero values take the defaults")
	for name, tt := range map[string]struct {
		cfg  metering.Config
		want string
	}{
		"batch too big":   {metering.Config{BatchSize: 20_000}, "metering.batch-size"},
		"negative batch":  {metering.Config{BatchSize: -1}, "metering.batch-size"},
		"ack wait tiny":   {metering.Config{AckWait: time.Millisecond}, "metering.ack-wait"},
		"idle wait tiny":  {metering.Config{IdleWait: time.Microsecond}, "metering.idle-wait"},
		"max deliver":     {metering.Config{MaxDeliver: -2}, "metering.max-deliver"},
		"negative reload": {metering.Config{PricesReload: -time.Second}, "metering.prices-reload"},
		"check too often": {metering.Config{ReconcileCheck: time.Millisecond}, "metering.reconcile-check"},
	} {
		require.ErrorContains(t, tt.cfg.Validate(), tt.want, name)
	}
}

func TestReconcile_Command_ReportsAndRepairs(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	nc := p.Records
	ctx := t.Context()
	env := int64(1)
	_, err := p.Pool.Exec(ctx, `
		INSERT INTO convergence_tasks (id, env_id, org_id, type, status, request, result, input_tokens, output_tokens, total_tokens, finished_at)
		VALUES ('lost-task', $1, 1, 'design', 'completed', '{}',
			'{"agents": [{"agent": "A", "provider": "anthropic", "model": "claude-sonnet-4-5", "calls": 1, "inputTokens": 100, "outputTokens": 20, "cachedTokens": 0, "totalTokens": 120}]}',
			100, 20, 120, $2)`, env, t0)
	require.NoError(t, err)

	opts := metering.ReconcileOptions{From: "2025-03-01", To: "2025-03-31"}
	var out bytes.Buffer
	err = metering.Reconcile(ctx, metering.Config{}, p.db.For(t, pgrole.Metering), nc, opts, &out)
	require.ErrorIs(t, err, metering.ErrUnreconciled)
	require.Regexp(t, `missing from the ledger +1\n`, out.String())
	require.Contains(t, out.String(), "lost-task")
	require.Contains(t, out.String(), "run again with -repair")

	opts.Repair = true
	out.Reset()
	require.NoError(t, metering.Reconcile(ctx, metering.Config{}, p.db.For(t, pgrole.Metering), nc, opts, &out), out.String())
	opts.Repair, opts.JSON = false, true
	out.Reset()
	require.NoError(t, metering.Reconcile(ctx, metering.Config{}, p.db.For(t, pgrole.Metering), nc, opts, &out))
	require.Contains(t, out.String(), `"clean": true`)
	require.Contains(t, out.String(), `"matched": 1`)
	require.EqualValues(t, 120, p.count(`SELECT sum(total_tokens) FROM metering_rollup_monthly WHERE env_id = $1`, env))
}

func TestReconcileCheck_ReportsTheGapsOfYesterdayAndTodayInItsMetrics(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ctx := t.Context()
	// A task the ledger never heard of, finished ten minutes ago, and one that finished a moment
	// ago, whose result may still be on its way: only the first is a gap.
	for id, ago := range map[string]time.Duration{"lost-task": 10 * time.Minute, "just-finished": 0} {
		_, err := p.Pool.Exec(ctx, `
			INSERT INTO convergence_tasks (id, env_id, org_id, type, status, request, result, input_tokens, output_tokens, total_tokens, finished_at)
			VALUES ($1, 1, 1, 'design', 'completed', '{}', '{"agents": []}', 100, 20, 120, $2)`, id, time.Now().Add(-ago))
		require.NoError(t, err)
	}
	cfg := testConfig()
	cfg.ReconcileCheck = 100 * time.Millisecond
	in := p.start(cfg, nil)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		require.NoError(c, testutil.GatherAndCompare(in.Registry, strings.NewReader(`
# HELP convergence_metering_reconcile_gaps Tasks on which the ledger and the converger's records disagreed at this process's last reconciliation check, by kind (missing, mismatched, orphaned).
# TYPE convergence_metering_reconcile_gaps gauge
convergence_metering_reconcile_gaps{kind="mismatched"} 0
convergence_metering_reconcile_gaps{kind="missing"} 1
convergence_metering_reconcile_gaps{kind="orphaned"} 0
`), "convergence_metering_reconcile_gaps"))
	}, 15*time.Second, 50*time.Millisecond)
	mfs, err := in.Registry.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "convergence_metering_reconcile_checked_timestamp_seconds" {
			require.InDelta(t, float64(time.Now().Unix()), mf.GetMetric()[0].GetGauge().GetValue(), 60, "the check's time")
		}
	}
}
