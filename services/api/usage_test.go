package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

var usageDay = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)

// usageFixture is two organizations' usage in March 2025, recorded through the ledger:
// org 1 has tenants acme and beta, org 2 has gamma.
type usageFixture struct {
	*testAPI
	acme, beta, gamma int64
	acmeKey, betaKey  string
	org2              int64
	prices            ledger.Prices
}

func newUsageFixture(t *testing.T) *usageFixture {
	t.Helper()
	a := newTestAPI(t)
	a.startMetering()
	f := &usageFixture{testAPI: a}
	f.acme, f.acmeKey = a.insertTenant("acme", "running")
	f.beta, f.betaKey = a.insertTenant("beta", "destroyed")
	require.NoError(t, a.Pool.QueryRow(t.Context(), `INSERT INTO organizations (name) VALUES ('org-two') RETURNING id`).Scan(&f.org2))
	require.NoError(t, a.Pool.QueryRow(t.Context(), `INSERT INTO environments (org_id, name, status) VALUES ($1, 'gamma', 'running') RETURNING id`, f.org2).Scan(&f.gamma))

	var err error
	f.prices, err = ledger.RegisterPrices(t.Context(), a.Pool, pricing.Default())
	require.NoError(t, err)
	store := ledger.NewStore(a.Pool)
	sonnet := func(in, out, cached int64) events.AgentUsage {
		return events.AgentUsage{Agent: "A", Provider: "anthropic", Model: "claude-sonnet-4-20250514", Calls: 2,
			Usage: events.Usage{InputTokens: in, OutputTokens: out, CachedTokens: cached, TotalTokens: in + out}}
	}
	mini := func(in, out int64) events.AgentUsage {
		return events.AgentUsage{Agent: "B", Provider: "openai", Model: "gpt-4o-mini", Calls: 1,
			Usage: events.Usage{InputTokens: in, OutputTokens: out, TotalTokens: in + out}}
	}
	task := func(id string, env, org int64, at time.Time, score float64, agents ...events.AgentUsage) ledger.TaskUsage {
		var u events.Usage
		for _, a := range agents {
			u = u.Add(a.Usage)
		}
		return ledger.TaskUsage{EventID: "ev-" + id, TaskID: id, EnvID: env, OrgID: org, Score: &score, FinishedAt: at, Agents: agents, Usage: u}
	}
	_, err = store.RecordTasks(t.Context(), f.prices, []ledger.TaskUsage{
		task("a1", f.acme, 1, usageDay, 90, sonnet(1_000_000, 100_000, 200_000), mini(10_000, 1000)),
		task("a2", f.acme, 1, usageDay.AddDate(0, 0, 1), 80, sonnet(500_000, 50_000, 0)),
		task("b1", f.beta, 1, usageDay, 70, mini(2_000_000, 0)),
		task("g1", f.gamma, f.org2, usageDay.AddDate(0, 0, 10), 60, sonnet(100, 10, 0)),
		task("a-april", f.acme, 1, usageDay.AddDate(0, 1, 0), 50, sonnet(7, 7, 0)),
	})
	require.NoError(t, err)
	_, err = store.RecordLifecycle(t.Context(), f.prices, []ledger.LifecycleFact{
		{EventID: "l1", EnvID: f.acme, OrgID: 1, State: events.StateRunning, At: usageDay},
		{EventID: "l2", EnvID: f.acme, OrgID: 1, State: events.StateStopped, At: usageDay.Add(90 * time.Minute)},
	})
	require.NoError(t, err)
	return f
}

func usageOf(t *testing.T, body map[string]any, path ...string) map[string]any {
	t.Helper()
	v := any(body)
	for _, p := range path {
		v = v.(map[string]any)[p]
	}
	m, ok := v.(map[string]any)
	require.True(t, ok, "%v at %v", body, path)
	return m
}

func groups(t *testing.T, body map[string]any) []map[string]any {
	t.Helper()
	raw, ok := body["groups"].([]any)
	require.True(t, ok, "%v", body)
	out := make([]map[string]any, len(raw))
	for i, g := range raw {
		out[i] = g.(map[string]any)
	}
	return out
}

const march = "from=2025-03-01&to=2025-03-31"

func TestUsage_Admin_TotalsAndGroupsFromTheRollups(t *testing.T) {
	t.Parallel()
	f := newUsageFixture(t)

	code, body := f.do(http.MethodGet, "/api/v1/usage?"+march, adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, true, body["success"])
	require.Equal(t, "2025-03-01", body["from"])
	require.Equal(t, "USD", body["currency"])
	tot := usageOf(t, body, "totals")
	require.InDelta(t, 4, tot["tasks"], 0)
	require.InDelta(t, 1_000_000+10_000+500_000+2_000_000+100, tot["inputTokens"], 0)
	require.InDelta(t, 100_000+1000+50_000+10, tot["outputTokens"], 0)
	require.InDelta(t, 200_000, tot["cachedTokens"], 0)
	require.InDelta(t, 3_661_110, tot["totalTokens"], 0)
	require.InDelta(t, 2+1+2+1+2, tot["calls"], 0)
	require.InDelta(t, 5400, tot["containerSeconds"], 0)
	require.InDelta(t, 75, tot["averageConvergenceScore"], 0)
	// Sonnet a1: 800k×3 + 200k×0.30 + 100k×15 = 3.96; mini a1: 10k×0.15 + 1k×0.60 = 0.0021;
	// sonnet a2: 500k×3 + 50k×15 = 2.25; mini b1: 2M×0.15 = 0.30; sonnet g1: 100×3 + 10×15 = 0.00045;
	// 5400 s at $0.00001 = 0.054.
	wantMicros := 3_960_000 + 2_100 + 2_250_000 + 300_000 + 450 + 54_000
	require.InDelta(t, wantMicros, tot["costMicros"], 0)
	require.Equal(t, pricing.Micros(wantMicros).String(), tot["cost"])
	require.InDelta(t, 0, tot["unpricedTokens"], 0)
	require.Empty(t, groups(t, body))

	// By organization: org totals are the sum of their tenants'.
	_, byOrg := f.do(http.MethodGet, "/api/v1/usage?"+march+"&groupBy=organization", adminToken, nil)
	_, byTenant := f.do(http.MethodGet, "/api/v1/usage?"+march+"&groupBy=tenant", adminToken, nil)
	og, tg := groups(t, byOrg), groups(t, byTenant)
	require.Len(t, og, 2)
	require.Len(t, tg, 3)
	for _, o := range og {
		var tokens, cost float64
		for _, g := range tg {
			if g["orgId"] == o["orgId"] {
				tokens += usageOf(t, g, "usage")["totalTokens"].(float64)
				cost += usageOf(t, g, "usage")["costMicros"].(float64)
			}
		}
		require.InDelta(t, usageOf(t, o, "usage")["totalTokens"], tokens, 0, "org %v", o["orgId"])
		require.InDelta(t, usageOf(t, o, "usage")["costMicros"], cost, 0, "org %v", o["orgId"])
		require.NotContains(t, o, "envId")
	}
	require.InDelta(t, float64(f.acme), tg[0]["envId"], 0)
	require.InDelta(t, 5400, usageOf(t, tg[0], "usage")["containerSeconds"], 0)

	// One organization, by model and day.
	code, body = f.do(http.MethodGet, fmt.Sprintf("/api/v1/usage?%s&orgId=%d&groupBy=model,day", march, f.org2), adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	g := groups(t, body)
	require.Len(t, g, 1)
	require.Equal(t, "anthropic", g[0]["provider"])
	require.Equal(t, "claude-sonnet-4-20250514", g[0]["model"])
	require.Equal(t, "2025-03-24", g[0]["day"])
	require.InDelta(t, float64(f.org2), body["orgId"], 0)

	// By month over two months.
	_, body = f.do(http.MethodGet, "/api/v1/usage?from=2025-03-01&to=2025-04-30&groupBy=month", adminToken, nil)
	g = groups(t, body)
	require.Len(t, g, 2)
	require.Equal(t, "2025-03", g[0]["month"])
	require.Equal(t, "2025-04", g[1]["month"])
	require.InDelta(t, 14, usageOf(t, g[1], "usage")["totalTokens"], 0)
}

func TestUsage_AdminTenant_OneTenantEvenDestroyed(t *testing.T) {
	t.Parallel()
	f := newUsageFixture(t)
	code, body := f.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/usage?%s&groupBy=model", f.beta, march), adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.InDelta(t, float64(f.beta), body["envId"], 0)
	require.InDelta(t, 2_000_000, usageOf(t, body, "totals")["inputTokens"], 0)
	g := groups(t, body)
	require.Len(t, g, 1)
	require.Equal(t, "gpt-4o-mini", g[0]["model"])
}

func TestUsage_Tenant_SeesOnlyItsOwnUsage(t *testing.T) {
	t.Parallel()
	f := newUsageFixture(t)
	code, body := f.do(http.MethodGet, "/api/v1/usage/me?"+march+"&groupBy=day", f.acmeKey, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.InDelta(t, float64(f.acme), body["envId"], 0)
	tot := usageOf(t, body, "totals")
	require.InDelta(t, 2, tot["tasks"], 0)
	require.InDelta(t, 1_510_000, tot["inputTokens"], 0)
	require.InDelta(t, 5400, tot["containerSeconds"], 0)
	days := groups(t, body)
	require.Len(t, days, 2)
	require.Equal(t, "2025-03-14", days[0]["day"])

	// The tenant in the key decides; nothing in the request can widen it.
	code, _ = f.do(http.MethodGet, fmt.Sprintf("/api/v1/usage/me?%s&orgId=%d", march, f.org2), f.acmeKey, nil)
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = f.do(http.MethodGet, "/api/v1/usage?"+march, f.acmeKey, nil)
	require.Equal(t, http.StatusUnauthorized, code, "a tenant key does not open the admin endpoint")
	code, _ = f.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/usage", f.gamma), f.acmeKey, nil)
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = f.do(http.MethodGet, "/api/v1/usage/me", adminToken, nil)
	require.Equal(t, http.StatusUnauthorized, code, "the admin has no usage of its own")
	code, _ = f.do(http.MethodGet, "/api/v1/usage/me", f.betaKey, nil)
	require.Equal(t, http.StatusUnauthorized, code, "a destroyed tenant's key is refused")
}

func TestUsage_BadInput_400SaysWhatIsWrong(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startMetering()
	env, key := a.insertTenant("acme", "running")
	tests := []struct {
		path, token, want string
	}{
		{"/api/v1/usage?from=2025-13-01", adminToken, "YYYY-MM-DD"},
		{"/api/v1/usage?from=2025-03-01T00:00:00Z", adminToken, "YYYY-MM-DD"},
		{"/api/v1/usage?to=yesterday", adminToken, "to:"},
		{"/api/v1/usage?from=2025-03-10&to=2025-03-01", adminToken, "before"},
		{"/api/v1/usage?groupBy=week", adminToken, `unknown groupBy "week"`},
		{"/api/v1/usage?groupBy=day,month", adminToken, "exclude each other"},
		{"/api/v1/usage?group_by=tenant", adminToken, `unknown query parameter "group_by"`},
		{"/api/v1/usage?orgId=abc", adminToken, "orgId"},
		{"/api/v1/usage?from=2020-01-01&to=2025-01-01&groupBy=day", adminToken, "at most 400 days"},
		{"/api/v1/tenant/abc/usage", adminToken, "envId"},
		{"/api/v1/tenant/-3/usage", adminToken, "envId"},
		{fmt.Sprintf("/api/v1/tenant/%d/usage?groupBy=organization", env), adminToken, "does not apply to one tenant"},
		{"/api/v1/usage/me?groupBy=tenant", key, "does not apply to one tenant"},
		{"/api/v1/usage/reconcile?from=2024-01-01&to=2025-12-31", adminToken, "at most 366 days"},
		{"/api/v1/usage/reconcile?repair=true", adminToken, "unknown query parameter"},
	}
	for _, tt := range tests {
		code, body := a.do(http.MethodGet, tt.path, tt.token, nil)
		require.Equal(t, http.StatusBadRequest, code, tt.path)
		require.Equal(t, "invalid_request", errorCode(body), tt.path)
		require.Contains(t, body["error"].(map[string]any)["message"], tt.want, tt.path)
	}
	code, body := a.do(http.MethodPost, "/api/v1/usage/reconcile", adminToken, map[string]any{"from": "2025-03-01", "repair": true})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body["error"].(map[string]any)["message"], `unknown field "repair"`)
}

func TestUsage_UnknownTenantOrOrganization_404(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	code, body := a.do(http.MethodGet, "/api/v1/tenant/424242/usage", adminToken, nil)
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, "not_found", errorCode(body))
	require.Contains(t, body["error"].(map[string]any)["message"], "tenant 424242")
	code, body = a.do(http.MethodGet, "/api/v1/usage?orgId=99", adminToken, nil)
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, body["error"].(map[string]any)["message"], "organization 99")
}

func TestUsage_NoUsageYet_ZeroTotals(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.startMetering()
	code, body := a.do(http.MethodGet, "/api/v1/usage?groupBy=tenant", adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	tot := usageOf(t, body, "totals")
	require.InDelta(t, 0, tot["totalTokens"], 0)
	require.Equal(t, "0.000000", tot["cost"])
	require.Nil(t, tot["averageConvergenceScore"], "no completed task, no average")
	require.Empty(t, groups(t, body))
	require.Equal(t, time.Now().UTC().Format("2006-01")+"-01", body["from"], "the month to date by default")
}

func TestUsage_UnpricedModels_ListedWithTheirUsage(t *testing.T) {
	t.Parallel()
	f := newUsageFixture(t)
	_, err := ledger.NewStore(f.Pool).RecordTasks(t.Context(), f.prices, []ledger.TaskUsage{{
		EventID: "ev-u", TaskID: "u", EnvID: f.acme, OrgID: 1, FinishedAt: usageDay,
		Agents: []events.AgentUsage{{Agent: "A", Provider: "ollama", Model: "llama3", Calls: 3,
			Usage: events.Usage{InputTokens: 900, OutputTokens: 100, TotalTokens: 1000}}},
	}})
	require.NoError(t, err)

	code, body := f.do(http.MethodGet, "/api/v1/usage/unpriced", adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	models := body["models"].([]any)
	require.Len(t, models, 1)
	m := models[0].(map[string]any)
	require.Equal(t, "ollama", m["provider"])
	require.Equal(t, "llama3", m["model"])
	require.InDelta(t, 1000, m["totalTokens"], 0)
	require.Equal(t, false, m["pricedNow"])
	require.Equal(t, "builtin-2025-06", usageOf(t, body, "priceVersion")["label"])

	_, body = f.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/usage?%s", f.acme, march), adminToken, nil)
	tot := usageOf(t, body, "totals")
	require.InDelta(t, 1000, tot["unpricedTokens"], 0, "unpriced usage is shown, not priced at zero")
	require.InDelta(t, 3, tot["unpricedCalls"], 0)
}

func TestUsage_Reconcile_GetReportsPostRepairs(t *testing.T) {
	t.Parallel()
	f := newUsageFixture(t)
	f.startConverger()
	_, err := f.Pool.Exec(t.Context(), `
		INSERT INTO convergence_tasks (id, env_id, org_id, type, status, request, input_tokens, output_tokens, cached_tokens, total_tokens, convergence_score, finished_at)
		VALUES ('a1', $1, 1, 'design', 'completed', '{}', 1010000, 101000, 200000, 1111000, 90, $2),
		       ('lost', $1, 1, 'design', 'completed', '{"model": "gpt-4o-mini"}', 300, 30, 0, 330, 75, $2)`, f.acme, usageDay)
	require.NoError(t, err)

	q := url.Values{"from": {"2025-03-01"}, "to": {"2025-03-31"}}
	code, body := f.do(http.MethodGet, "/api/v1/usage/reconcile?"+q.Encode(), adminToken, nil)
	require.Equal(t, http.StatusOK, code, "%v", body)
	rep := usageOf(t, body, "reconciliation")
	require.Equal(t, false, rep["clean"])
	require.InDelta(t, 2, rep["tasksChecked"], 0)
	require.InDelta(t, 1, rep["matched"], 0)
	require.Len(t, rep["missing"], 1)
	require.Len(t, rep["orphaned"], 3, "a2, b1 and g1: in the ledger, not in this test's converger records")

	code, body = f.do(http.MethodPost, "/api/v1/usage/reconcile", adminToken, map[string]string{"from": "2025-03-01", "to": "2025-03-31"})
	require.Equal(t, http.StatusOK, code, "%v", body)
	rep = usageOf(t, body, "reconciliation")
	require.Equal(t, true, rep["repair"])
	missing := rep["missing"].([]any)[0].(map[string]any)
	require.Equal(t, "lost", missing["taskId"])
	require.Equal(t, true, missing["repaired"])

	_, body = f.do(http.MethodGet, "/api/v1/usage/reconcile?"+q.Encode(), adminToken, nil)
	rep = usageOf(t, body, "reconciliation")
	require.InDelta(t, 2, rep["matched"], 0)
	require.Empty(t, rep["missing"])
	repairs := f.audit("?action=usage.repair")
	require.Len(t, repairs, 1, "a repair changes what is billed, so it is audited; a check is not")
	require.Equal(t, "the usage ledger from 2025-03-01 to 2025-03-31", repairs[0]["target"])

	// The repaired task is in the usage, priced at the requested model without a provider:
	// the built-in prices name providers, so it is unpriced and says so.
	_, body = f.do(http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/usage?%s", f.acme, march), adminToken, nil)
	tot := usageOf(t, body, "totals")
	require.InDelta(t, 3, tot["tasks"], 0)
	require.InDelta(t, 330, tot["unpricedTokens"], 0)
}
