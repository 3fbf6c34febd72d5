package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/money"
	"github.com/convergence-dev/convergence/services/metering"
)

func TestBudgets_SetGetRemove_PlanLimit_BadInput(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startMetering()
	orgID := a.createOrg("careful", "free")
	envID, _ := a.insertTenantOf(orgID, "careful-app", "running")
	orgPath, envPath := fmt.Sprintf("/api/v1/orgs/%d/budget", orgID), fmt.Sprintf("/api/v1/tenant/%d/budget", envID)
	budget := func(method, path string, body any) map[string]any {
		t.Helper()
		code, b := a.do(method, path, adminToken, body)
		require.Equal(t, http.StatusOK, code, "%v", b)
		return b["budget"].(map[string]any)
	}

	b := budget(http.MethodGet, orgPath, nil)
	require.Equal(t, "plan", b["source"], "the free plan's limit")
	require.Equal(t, "10.000000", b["monthlySpendLimit"])
	require.Equal(t, "0.000000", b["spent"])
	require.Equal(t, "10.000000", b["remaining"])
	require.Equal(t, time.Now().UTC().Format("2006-01"), b["month"])
	require.Equal(t, "USD", b["currency"])

	b = budget(http.MethodPut, orgPath, map[string]any{"monthlySpendLimit": "5.00", "alertAt": []float64{1, 0.5, 0.8, 0.8}})
	require.Equal(t, "organization", b["source"])
	require.Equal(t, "5.000000", b["monthlySpendLimit"])
	require.Equal(t, []any{0.5, 0.8, 1.0}, b["alertAt"], "sorted, once each")
	b = budget(http.MethodPut, orgPath, map[string]any{"monthlySpendLimit": nil})
	require.Equal(t, "plan", b["source"], "null removes the organization's own: its plan's applies")

	b = budget(http.MethodGet, envPath, nil)
	require.Equal(t, "none", b["source"])
	require.Nil(t, b["monthlySpendLimit"])
	require.Nil(t, b["remaining"])
	b = budget(http.MethodPut, envPath, map[string]any{"monthlySpendLimit": 2.5})
	require.Equal(t, "tenant", b["source"])
	require.Equal(t, "2.500000", b["monthlySpendLimit"], "a JSON number is read from its text")
	require.InDelta(t, envID, b["envId"], 0)

	for body, want := range map[string]string{
		`{}`:                                           `monthlySpendLimit is required`,
		`{"monthlySpendLimit": "abc"}`:                 `monthlySpendLimit: amount "abc" is not a non-negative decimal number`,
		`{"monthlySpendLimit": "-1"}`:                  `monthlySpendLimit: amount "-1" is not a non-negative decimal number`,
		`{"monthlySpendLimit": "1.0000001"}`:           `monthlySpendLimit: amount "1.0000001" has more than 6 decimal places`,
		`{"monthlySpendLimit": "100000000.01"}`:        `monthlySpendLimit: 100000000.010000 is implausibly large`,
		`{"monthlySpendLimit": "5", "alertAt": [0]}`:   `alertAt: 0 is not a fraction of the limit above 0 and at most 1`,
		`{"monthlySpendLimit": "5", "alertAt": [1.5]}`: `alertAt: 1.5 is not a fraction`,
		`{"monthlySpendLimit": "5", "cap": 1}`:         `unknown field "cap"`,
	} {
		code, b := a.doRaw(http.MethodPut, orgPath, adminToken, body)
		require.Equal(t, http.StatusBadRequest, code, "%s: %v", body, b)
		require.Contains(t, errorMessage(b), want, body)
	}
	code, b2 := a.do(http.MethodPut, "/api/v1/orgs/777/budget", adminToken, map[string]any{"monthlySpendLimit": "1"})
	require.Equal(t, http.StatusNotFound, code, "%v", b2)
	code, _ = a.do(http.MethodGet, "/api/v1/tenant/777/budget", adminToken, nil)
	require.Equal(t, http.StatusNotFound, code)

	entries := a.audit("?action=budget.set")
	require.Len(t, entries, 12, "every budget change asked for is audited, refused ones too")
	require.Equal(t, fmt.Sprintf("budget of tenant %d of organization %d", envID, orgID), entries[len(entries)-3]["target"])
}

// pricedSimulated is a price file that charges the simulated provider one micro-unit a token.
func pricedSimulated(t testing.TB) metering.Config {
	t.Helper()
	f := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"version": "budget-test", "currency": "USD", "containerSecond": "0", "models": [
		{"provider": "simulated", "model": "*", "inputPerMillion": "1", "outputPerMillion": "1"}]}`), 0o600))
	return metering.Config{Prices: f}
}

// budgetOf reads a tenant's budget.
func (c *convergeEnv) budgetOf(t testing.TB, envID int64) map[string]any {
	t.Helper()
	a := c.call(t, http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/budget", envID), adminToken, nil)
	require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
	return a.Body["budget"].(map[string]any)
}

func (c *convergeEnv) setBudget(t testing.TB, envID int64, limit string) {
	t.Helper()
	a := c.call(t, http.MethodPut, fmt.Sprintf("/api/v1/tenant/%d/budget", envID), adminToken, map[string]any{"monthlySpendLimit": limit})
	require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
}

func TestBudgets_RunReservedThenSettledToTheLedger_OverTheRemainder402(t *testing.T) {
	t.Parallel()
	c := newConvergeEnvWith(t, 0, pricedSimulated(t))
	envID, key := c.insertTenant("metered", "running")
	c.setBudget(t, envID, "0.100000")

	// (2 rounds × 2 agents + 1) × 8000 tokens at 1 micro-unit each, and 4 of rounding: 40004.
	a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Design a queue. [sim:converge]", "maxRounds": 2})
	require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
	u := a.task(t).Usage
	cost := u.InputTokens + u.OutputTokens
	require.Positive(t, cost)
	var b map[string]any
	require.Eventually(t, func() bool {
		b = c.budgetOf(t, envID)
		return b["reserved"] == "0.000000"
	}, 20*time.Second, 20*time.Millisecond, "the reservation settles when the usage is recorded")
	require.Equal(t, fmt.Sprintf("0.%06d", cost), b["spent"], "to the ledger's cost: a micro-unit a token")

	// What remains is less than a run's worst case: refused, saying what remains.
	c.setBudget(t, envID, fmt.Sprintf("0.%06d", cost+30_000))
	a = c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Design a cache.", "maxRounds": 2})
	require.Equal(t, http.StatusPaymentRequired, a.Status, "%s", a.Raw)
	require.Equal(t, "budget_exceeded", errorCode(a.Body))
	require.Contains(t, errorMessage(a.Body), fmt.Sprintf("tenant %d's monthly budget of 0.%06d USD has 0.030000 left", envID, cost+30_000))
	require.Contains(t, errorMessage(a.Body), "this run may cost up to 0.040004 USD (40000 tokens")

	// A smaller token budget fits, and bounds the run.
	a = c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Design a cache. [sim:converge]", "maxRounds": 2, "tokenBudget": 20_000})
	require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
	require.Eventually(t, func() bool {
		b = c.budgetOf(t, envID)
		return b["reserved"] == "0.000000"
	}, 20*time.Second, 20*time.Millisecond)

	// The month's draft invoice is what the runs cost, to the micro-unit.
	a = c.call(t, http.MethodPost, "/api/v1/orgs/1/invoices", adminToken, map[string]any{"period": time.Now().UTC().Format("2006-01")})
	require.Equal(t, http.StatusCreated, a.Status, "%s", a.Raw)
	require.Equal(t, b["spent"], a.Body["invoice"].(map[string]any)["total"])
}

func TestBudgets_ParallelRunsOnTwoAPIsAndTwoConvergers_NeverPassTheLimit(t *testing.T) {
	t.Parallel()
	r := raceBudget(t, 50, 150_000)
	require.Equal(t, r.runs, r.ran+r.refused, "every run either ran or was refused 402")
	require.Positive(t, r.ran)
	require.Positive(t, r.refused)
	require.LessOrEqual(t, r.spent, r.limit, "spend stays within the limit")
	t.Logf("%d runs: %d ran, %d refused 402; spent %d of %d micro-units", r.runs, r.ran, r.refused, r.spent, r.limit)
}

// budgetRace is the outcome of raceBudget: runs started, ran, refused with 402, and the
// tenant's spend once every reservation settled, against its limit (micro-units).
type budgetRace struct {
	runs, ran, refused int
	spent, limit       int64
}

// raceBudget starts runs sync runs of one tenant at once, alternating between two API
// replicas, run by two convergers, against a tenant budget of limit micro-units; the simulated
// provider is priced at one micro-unit a token. Each run reserves (2 rounds × 2 agents + 1) ×
// 8000 tokens + 4, so a limit of 150000 fits three at once.
func raceBudget(tb testing.TB, runs int, limit int64) budgetRace {
	tb.Helper()
	c := newConvergeEnvWith(tb, 0, pricedSimulated(tb))
	c.goRun(c.converger(tb).Run) // a second converger
	urls := []string{c.URL, c.serveAPI()}
	envID, key := c.insertTenant("racer", "running")
	c.unlimited(envID)
	c.setBudget(tb, envID, money.Micros(limit).String())

	r := budgetRace{runs: runs, limit: limit}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			a := call(tb, urls[i%2], http.MethodPost, "/api/v1/converge", key,
				map[string]any{"prompt": fmt.Sprintf("Design cache %d. [sim:converge]", i), "maxRounds": 2}, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case a.Status == http.StatusOK:
				r.ran++
			case a.Status == http.StatusPaymentRequired && errorCode(a.Body) == "budget_exceeded":
				r.refused++
			default:
				tb.Errorf("a run answered %d: %s", a.Status, a.Raw)
			}
		})
	}
	wg.Wait()
	var b map[string]any
	require.Eventually(tb, func() bool {
		b = c.budgetOf(tb, envID)
		return b["reserved"] == "0.000000"
	}, 30*time.Second, 20*time.Millisecond, "every reservation settles")
	spent, err := money.ParseMicros(b["spent"].(string))
	require.NoError(tb, err)
	r.spent = int64(spent)
	return r
}

func TestBudgets_Sweep_GivesBackReservationsOfRunsNeverRecorded(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startConverger()
	a.startMeteringWith(pricedSimulated(t))
	envID, key := a.insertTenant("swept", "running")
	code, body := a.do(http.MethodPut, fmt.Sprintf("/api/v1/tenant/%d/budget", envID), adminToken, map[string]any{"monthlySpendLimit": "1"})
	require.Equal(t, http.StatusOK, code, "%v", body)
	code, body = a.do(http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Queued.", "async": true})
	require.Equal(t, http.StatusAccepted, code, "%v", body)

	// A reservation whose run was never recorded: its API replica stopped before the record.
	orphan := taskspec.NewID()
	_, err := natsrpc.Call[events.BudgetReservation, events.BudgetReserved](t.Context(), a.NC, events.SubjectBudgetReserve, events.BudgetReservation{
		TaskID: orphan, OrgID: 1, EnvID: envID, Provider: "simulated", Tokens: 1000})
	require.NoError(t, err)
	n, err := a.svc.SweepReservationsOnce(t.Context())
	require.NoError(t, err)
	require.Zero(t, n, "young reservations are left alone")

	_, err = a.Pool.Exec(t.Context(), `UPDATE metering.budget_reservations SET created_at = now() - interval '5 minutes'`)
	require.NoError(t, err)
	n, err = a.svc.SweepReservationsOnce(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	rows, err := a.Pool.Query(t.Context(), `SELECT task_id FROM metering.budget_reservations`)
	require.NoError(t, err)
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{body["taskId"].(string)}, left, "the recorded run, not finished, keeps its reservation")
}

func TestBudgets_AFreeModelRunsWhateverTheBudgetHasLeft(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startConverger()
	a.startMetering() // the built-in prices: the simulated provider is free
	envID, key := a.insertTenant("frugal", "running")
	code, body := a.do(http.MethodPut, fmt.Sprintf("/api/v1/tenant/%d/budget", envID), adminToken, map[string]any{"monthlySpendLimit": "0"})
	require.Equal(t, http.StatusOK, code, "%v", body)
	code, body = a.do(http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Free of charge.", "async": true})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	var n int
	require.NoError(t, a.Pool.QueryRow(t.Context(), `SELECT count(*) FROM metering.budget_reservations`).Scan(&n))
	require.Zero(t, n, "nothing to reserve")
}

func TestBudgets_AlertThresholds_EachToldOnce_AsAnEventAndToTheTenantsWebhook(t *testing.T) {
	t.Parallel()
	c := newConvergeEnvWith(t, 0, pricedSimulated(t))
	envID, key := c.insertTenant("watched", "running")
	hooks := make(chan map[string]any, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if json.NewDecoder(r.Body).Decode(&body) == nil && r.Header.Get("webhook-signature") != "" {
			hooks <- body
		}
	}))
	t.Cleanup(receiver.Close)
	a := c.call(t, http.MethodPut, fmt.Sprintf("/api/v1/tenant/%d/budget", envID), adminToken,
		map[string]any{"monthlySpendLimit": "0.010000", "alertAt": []float64{0.1, 0.5, 1}, "webhookUrl": receiver.URL + "/budget"})
	require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
	require.Equal(t, receiver.URL+"/budget", a.Body["budget"].(map[string]any)["webhookUrl"])
	a = c.call(t, http.MethodPut, "/api/v1/orgs/1/budget", adminToken, map[string]any{"monthlySpendLimit": "1", "webhookUrl": receiver.URL})
	require.Equal(t, http.StatusBadRequest, a.Status, "an organization's alerts have no webhook: %s", a.Raw)
	run := func() {
		t.Helper()
		a := c.call(t, http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Design a lock. [sim:converge]", "maxRounds": 2, "tokenBudget": 4000})
		require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
		require.Eventually(t, func() bool { return c.budgetOf(t, envID)["reserved"] == "0.000000" }, 20*time.Second, 20*time.Millisecond)
	}
	told := func() int {
		t.Helper()
		n, err := c.api.BudgetAlertsOnce(t.Context())
		require.NoError(t, err)
		return n
	}
	require.Zero(t, told(), "nothing spent yet")
	run() // a run costs about a third of the limit
	require.Equal(t, 1, told(), "10%% reached: %v", c.budgetOf(t, envID))
	require.Zero(t, told(), "told once")
	run()
	require.Equal(t, 1, told(), "50%% reached: %v", c.budgetOf(t, envID))
	require.NoError(t, testutil.GatherAndCompare(c.apiReg, strings.NewReader(`
# HELP convergence_api_budget_thresholds_total Budget thresholds reached and told of (event, webhook), by level: approaching (below the limit) or limit.
# TYPE convergence_api_budget_thresholds_total counter
convergence_api_budget_thresholds_total{level="approaching"} 2
convergence_api_budget_thresholds_total{level="limit"} 0
`), "convergence_api_budget_thresholds_total"))

	// The stream holds the runs' usage events too; the alerts are the budget.threshold ones.
	cons, err := c.JS.OrderedConsumer(t.Context(), events.StreamBilling, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectBudgetThreshold}})
	require.NoError(t, err)
	var thresholds []float64
	for range 2 {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		require.NoError(t, err, "the events are relayed to BILLING")
		require.Equal(t, fmt.Sprintf("budget.threshold.1.%d", envID), msg.Subject())
		env, err := events.Decode(msg.Data())
		require.NoError(t, err)
		require.Equal(t, events.TypeBudgetThreshold, env.Type)
		var ev events.BudgetThreshold
		require.NoError(t, json.Unmarshal(env.Data, &ev))
		require.Equal(t, int64(10_000), ev.LimitMicros)
		require.GreaterOrEqual(t, ev.SpentMicros*1000, int64(ev.Threshold*1000)*ev.LimitMicros)
		thresholds = append(thresholds, ev.Threshold)
	}
	require.Equal(t, []float64{0.1, 0.5}, thresholds)

	// The converger delivers each to the budget's webhook, signed like a task's.
	var delivered []float64
	for range 2 {
		select {
		case body := <-hooks:
			require.Equal(t, "budget.threshold", body["type"])
			delivered = append(delivered, body["data"].(map[string]any)["threshold"].(float64))
		case <-time.After(15 * time.Second):
			t.Fatal("no budget alert webhook came")
		}
	}
	slices.Sort(delivered)
	require.Equal(t, []float64{0.1, 0.5}, delivered)
}
