package api_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
		`{}`:                                    `monthlySpendLimit is required`,
		`{"monthlySpendLimit": "abc"}`:          `monthlySpendLimit: amount "abc" is not a non-negative decimal number`,
		`{"monthlySpendLimit": "-1"}`:           `monthlySpendLimit: amount "-1" is not a non-negative decimal number`,
		`{"monthlySpendLimit": "1.0000001"}`:    `monthlySpendLimit: amount "1.0000001" has more than 6 decimal places`,
		`{"monthlySpendLimit": "100000000.01"}`: `monthlySpendLimit: 100000000.010000 is implausibly large`,
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
func pricedSimulated(t *testing.T) metering.Config {
	t.Helper()
	f := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"version": "budget-test", "currency": "USD", "containerSecond": "0", "models": [
		{"provider": "simulated", "model": "*", "inputPerMillion": "1", "outputPerMillion": "1"}]}`), 0o600))
	return metering.Config{Prices: f}
}

// budgetOf reads a tenant's budget.
func (c *convergeEnv) budgetOf(t *testing.T, envID int64) map[string]any {
	t.Helper()
	a := c.call(t, http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/budget", envID), adminToken, nil)
	require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
	return a.Body["budget"].(map[string]any)
}

func (c *convergeEnv) setBudget(t *testing.T, envID int64, limit string) {
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
	require.Eventually(t, func() bool { return c.budgetOf(t, envID)["reserved"] == "0.000000" }, 20*time.Second, 20*time.Millisecond)
}

func TestBudgets_ParallelRunsOnTwoAPIsAndTwoConvergers_NeverPassTheLimit(t *testing.T) {
	t.Parallel()
	c := newConvergeEnvWith(t, 0, pricedSimulated(t))
	c.goRun(c.converger(t).Run) // a second converger
	urls := []string{c.URL, c.serveAPI()}
	envID, key := c.insertTenant("racer", "running")
	c.unlimited(envID)
	const limit = 150_000 // micro-units: three runs' worst case of 40004 at once, and a little
	c.setBudget(t, envID, fmt.Sprintf("0.%06d", limit))

	const runs = 50
	codes := make(chan int, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			a := call(t, urls[i%2], http.MethodPost, "/api/v1/converge", key,
				map[string]any{"prompt": fmt.Sprintf("Design cache %d. [sim:converge]", i), "maxRounds": 2}, nil)
			if a.Status == http.StatusPaymentRequired {
				assert.Equal(t, "budget_exceeded", errorCode(a.Body))
			}
			codes <- a.Status
		})
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for code := range codes {
		count[code]++
	}
	require.Equal(t, runs, count[http.StatusOK]+count[http.StatusPaymentRequired], "every run either ran or was refused 402: %v", count)
	require.Positive(t, count[http.StatusOK])
	require.Positive(t, count[http.StatusPaymentRequired])

	var b map[string]any
	require.Eventually(t, func() bool {
		b = c.budgetOf(t, envID)
		return b["reserved"] == "0.000000"
	}, 30*time.Second, 20*time.Millisecond)
	spent := strings.TrimPrefix(b["spent"].(string), "0.")
	require.LessOrEqual(t, spent, fmt.Sprintf("%06d", limit), "spend stays within the limit")
	t.Logf("%d runs: %d ran, %d refused 402; spent %s of %s", runs, count[http.StatusOK], count[http.StatusPaymentRequired], b["spent"], b["monthlySpendLimit"])
}
