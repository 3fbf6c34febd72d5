package api_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/api"
	"github.com/convergence-dev/convergence/services/metering"
)

// createOrg creates an organization on plan and returns its id.
func (a *testAPI) createOrg(name, plan string) int64 {
	a.t.Helper()
	code, body := a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": name, "plan": plan})
	require.Equal(a.t, http.StatusCreated, code, "%v", body)
	return int64(body["organization"].(map[string]any)["orgId"].(float64))
}

func TestPlans_Free_RoundsModelsTasksInFlightAndRate_MeShowsLimitsAndUse(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startConverger()
	a.startMetering()
	orgID := a.createOrg("thrifty", "free")
	_, key := a.insertTenantOf(orgID, "thrifty-app", "running")

	code, me := a.do(http.MethodGet, "/api/v1/me", key, nil)
	require.Equal(t, http.StatusOK, code, "%v", me)
	require.Equal(t, "free", me["plan"])
	limits := me["limits"].(map[string]any)
	require.InDelta(t, 5, limits["maxRounds"], 0)
	require.InDelta(t, 5, limits["tasksInFlight"], 0)
	require.Contains(t, limits["models"], "gpt-4o-mini*")
	require.Equal(t, "10.000000", limits["monthlySpendLimit"])
	require.Equal(t, map[string]any{"tenants": 1.0, "tasksInFlight": 0.0}, me["used"])

	create := func(body map[string]any) (int, map[string]any) {
		t.Helper()
		body["async"] = true
		if body["prompt"] == nil {
			body["prompt"] = "Design a rate limiter."
		}
		return a.do(http.MethodPost, "/api/v1/converge", key, body)
	}
	// Over the plan: 403 naming the quota, the plan and the way out. Over the platform: 400.
	code, body := create(map[string]any{"maxRounds": 8})
	require.Equal(t, http.StatusForbidden, code, "%v", body)
	require.Equal(t, "quota_exceeded", errorCode(body))
	require.Contains(t, errorMessage(body), `maxRounds: 8 is more than plan "free" allows, 5; ask for fewer, or move the organization to a larger plan`)
	code, body = create(map[string]any{"maxRounds": 11})
	require.Equal(t, http.StatusBadRequest, code, "%v", body)
	code, body = create(map[string]any{"model": "gpt-4o"})
	require.Equal(t, http.StatusForbidden, code, "%v", body)
	require.Equal(t, "model_not_allowed", errorCode(body))
	require.Contains(t, errorMessage(body), `model: "gpt-4o" is not allowed on plan "free", which allows simulated*, gpt-4o-mini*,`)

	// Allowed: a model the list matches, and none (the provider's default) with the plan's
	// rounds at most.
	code, body = create(map[string]any{"model": "GPT-4o-mini-2024-07-18"})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	code, body = create(map[string]any{})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	require.InDelta(t, 4, body["task"].(map[string]any)["maxRounds"], 0, "the platform's default, within the plan's 5")
	for range 3 {
		code, body = create(map[string]any{})
		require.Equal(t, http.StatusAccepted, code, "%v", body)
	}
	// Five in flight, the plan's limit: the sixth waits for one to finish.
	code, body = create(map[string]any{})
	require.Equal(t, http.StatusTooManyRequests, code, "%v", body)
	require.Equal(t, "too_many_tasks", errorCode(body))
	require.Contains(t, errorMessage(body), `tasksInFlight: this tenant has 5 unfinished convergence tasks, the limit of plan "free"`)

	code, me = a.do(http.MethodGet, "/api/v1/me", key, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, map[string]any{"tenants": 1.0, "tasksInFlight": 5.0}, me["used"])
	code, body = a.do(http.MethodGet, fmt.Sprintf("/api/v1/orgs/%d", orgID), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	require.InDelta(t, 5, body["organization"].(map[string]any)["tasksInFlight"], 0)

	// The plan's burst is 10 task creations, refilled at 20 a minute: the nine above took nine.
	var limited map[string]any
	for range 10 {
		if code, body = create(map[string]any{}); code == http.StatusTooManyRequests && errorCode(body) == "rate_limited" {
			limited = body
			break
		}
	}
	require.NotNil(t, limited, "the free plan's burst runs out")
	require.Contains(t, errorMessage(limited), `the limit is 10 at once`)
	require.Contains(t, errorMessage(limited), `or move the organization to a plan with a higher rate (it is on "free")`)

	// The default organization's plan sets no limits of its own.
	_, defKey := a.insertTenant("default-app", "running")
	code, body = a.do(http.MethodPost, "/api/v1/converge", defKey, map[string]any{"prompt": "x", "async": true, "maxRounds": 10, "model": "gpt-4o"})
	require.Equal(t, http.StatusAccepted, code, "%v", body)
}

func TestPlans_File_ReplacesAndAdds_ReloadsOnChange_BadFileKeepsThePlans(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "plans.json")
	write := func(content string) {
		t.Helper()
		// Written aside and renamed, so a reload never reads half a file.
		require.NoError(t, os.WriteFile(file+".tmp", []byte(content), 0o600))
		require.NoError(t, os.Rename(file+".tmp", file))
	}
	write(`{"plans": [
		{"name": "free", "maxRounds": 3, "models": ["simulated*"]},
		{"name": "team", "maxTenants": 2, "tasksInFlight": 1, "monthlySpendLimit": "50"}]}`)
	a := newTestAPIWith(t, api.Config{Plans: file, PlansReload: 20 * time.Millisecond})
	orgID := a.createOrg("squad", "team")
	_, key := a.insertTenantOf(orgID, "squad-app", "running")
	limitsOf := func() map[string]any {
		t.Helper()
		code, me := a.do(http.MethodGet, "/api/v1/me", key, nil)
		require.Equal(t, http.StatusOK, code, "%v", me)
		return me["limits"].(map[string]any)
	}
	l := limitsOf()
	require.InDelta(t, 2, l["maxTenants"], 0)
	require.InDelta(t, 1, l["tasksInFlight"], 0)
	require.InDelta(t, 10, l["maxRounds"], 0, "left out: the platform's cap")
	require.Equal(t, []any{"*"}, l["models"], "left out: every model")
	require.Equal(t, "50.000000", l["monthlySpendLimit"])
	code, body := a.do(http.MethodGet, fmt.Sprintf("/api/v1/orgs/%d", a.createOrg("solo", "free")), adminToken, nil)
	require.Equal(t, http.StatusOK, code)
	free := body["organization"].(map[string]any)["limits"].(map[string]any)
	require.InDelta(t, 3, free["maxRounds"], 0, "the file's free plan replaces the built-in one")
	require.InDelta(t, 10_000, free["maxTenants"], 0, "wholly: what it leaves out is the platform's")

	// A file that does not load leaves the plans in force.
	write(`{"plans": [{"name": "team", "maxRounds": 1}]}`)
	time.Sleep(100 * time.Millisecond)
	require.InDelta(t, 10, limitsOf()["maxRounds"], 0)
	code, body = a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "later", "plan": "team"})
	require.Equal(t, http.StatusCreated, code, "%v", body)

	// A good one is in force within a reload.
	write(`{"plans": [{"name": "team", "maxRounds": 4, "tasksInFlight": 1}]}`)
	require.Eventually(t, func() bool { return limitsOf()["maxRounds"] == 4.0 }, 10*time.Second, 20*time.Millisecond)

	// A plan the file no longer has: its organizations get the free plan's limits, and no new
	// organization may take it.
	write(`{"plans": []}`)
	require.Eventually(t, func() bool { return limitsOf()["maxRounds"] == 5.0 }, 10*time.Second, 20*time.Millisecond)
	code, body = a.do(http.MethodPost, "/api/v1/orgs", adminToken, map[string]any{"name": "too-late", "plan": "team"})
	require.Equal(t, http.StatusBadRequest, code, "%v", body)
	require.Contains(t, errorMessage(body), `plan "team" is not valid: use one of enterprise, free, pro, unlimited`)
}

func TestPlans_BadFileAtStart_RefusesToStart(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "plans.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"plans": [{"name": "pro", "burst": 0}]}`), 0o600))
	_, err := api.New(api.Config{AdminToken: adminToken, MaxBodyBytes: 1 << 20, Plans: file}, api.Deps{Logger: testLogger(), Registry: prometheus.NewRegistry()})
	require.ErrorContains(t, err, `plans[0] (pro): "burst" must be 1 to 1000000`)
}

func TestModels_UnpricedRefused_FreeOnlyAtZero_NoMeteringRefusesAll(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startConverger()
	_, key := a.insertTenant("pricey", "running")
	create := func(model string) (int, map[string]any) {
		t.Helper()
		return a.do(http.MethodPost, "/api/v1/converge", key, map[string]any{"prompt": "Design a cache.", "async": true, "model": model})
	}
	code, body := create("")
	require.Equal(t, http.StatusServiceUnavailable, code, "%v", body)
	require.Contains(t, errorMessage(body), "the metering, which keeps the prices, is unavailable", "nothing runs that might not be billed")
	code, body = a.do(http.MethodPost, "/v1/chat/completions", key, map[string]any{"model": "convergence-design",
		"messages": []map[string]any{{"role": "user", "content": "hi"}}})
	require.Equal(t, http.StatusServiceUnavailable, code, "the OpenAI surface checks the price too: %v", body)

	prices := filepath.Join(t.TempDir(), "prices.json")
	require.NoError(t, os.WriteFile(prices, []byte(`{"version": "t1", "currency": "USD", "containerSecond": "0", "models": [
		{"provider": "simulated", "model": "simulated-*", "inputPerMillion": "0", "outputPerMillion": "0"},
		{"provider": "simulated", "model": "costly*", "inputPerMillion": "1", "outputPerMillion": "2"}]}`), 0o600))
	a.startMeteringWith(metering.Config{Prices: prices})
	code, body = create("")
	require.Equal(t, http.StatusAccepted, code, "the default model, listed at zero: %v", body)
	code, body = create("costly-2")
	require.Equal(t, http.StatusAccepted, code, "%v", body)
	code, body = create("mystery-1")
	require.Equal(t, http.StatusBadRequest, code, "%v", body)
	require.Equal(t, "model_not_priced", errorCode(body))
	require.Contains(t, errorMessage(body), `model: mystery-1 of provider simulated has no price in the price table in force (t1)`)
	require.Contains(t, errorMessage(body), `plan "unlimited" allows *`)
}
