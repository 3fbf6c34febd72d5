package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/deploy/grafana"
	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/pkg/client"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/eventstest"
	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

// TestTenantFlow_SpawnConvergeThroughTenantMeterDestroy follows a tenant's life as an operator
// and the tenant's users see it: spawned from the default template, the tenant app converges
// through the platform with its own key, the tokens show in metering, and once the tenant is
// destroyed its key is refused.
func TestTenantFlow_SpawnConvergeThroughTenantMeterDestroy(t *testing.T) {
	t.Parallel()
	// The template image is built from this tree's tenant-templates/go, so the flow runs the
	// app as it is now.
	require.Equal(t, tenanttemplates.GoImage, dockertest.TenantImage(t))
	s := startStack(t)

	// Spawn: the default template, running and healthy.
	tn := s.spawn(t, "e2e-flow", false)
	require.Equal(t, "running", tn.Status)
	require.Equal(t, tenanttemplates.GoImage, tn.Image)
	require.NotZero(t, tn.Port)
	tenantURL := fmt.Sprintf("http://127.0.0.1:%d", tn.Port)
	code, body := call(t, http.MethodGet, tenantURL+"/health", "", nil)
	require.Equal(t, http.StatusOK, code, "tenant /health: %s", body)

	// Converge through the tenant app: it calls the platform with its own key.
	code, body = call(t, http.MethodPost, tenantURL+"/api/converge", "", map[string]any{
		"prompt":     "Design a password reset flow for a banking app",
		"agentARole": "Security Expert",
		"agentBRole": "UX Designer",
	})
	require.Equal(t, http.StatusOK, code, "tenant POST /api/converge: %s", body)
	var ans struct {
		TaskID           string       `json:"taskId"`
		Status           string       `json:"status"`
		ConvergenceScore *int         `json:"convergenceScore"`
		Task             *client.Task `json:"task"`
	}
	require.NoError(t, json.Unmarshal(body, &ans))
	require.EqualValues(t, client.StatusCompleted, ans.Status)
	require.NotNil(t, ans.ConvergenceScore, "the answer carries convergenceScore: %s", body)
	require.Positive(t, *ans.ConvergenceScore)
	require.Equal(t, "Security Expert", ans.Task.AgentARole)
	require.Equal(t, "UX Designer", ans.Task.AgentBRole)
	require.Equal(t, *ans.ConvergenceScore, ans.Task.Result.ConvergenceScore)
	tokens := ans.Task.Usage.TotalTokens
	require.Positive(t, tokens, "the task used tokens")

	// The task is the tenant's own: its key reads it, and the tenant app reads it back too.
	sdk := s.sdk(t, tn.APIKey)
	own, err := sdk.Task(t.Context(), ans.TaskID)
	require.NoError(t, err)
	require.Equal(t, client.StatusCompleted, own.Status)
	code, body = call(t, http.MethodGet, tenantURL+"/api/converge/"+ans.TaskID, "", nil)
	require.Equal(t, http.StatusOK, code, "tenant GET /api/converge/:taskId: %s", body)
	require.Contains(t, string(body), `"convergenceScore":`)

	// Metering: the tenant's tokens show in its usage.
	var usage struct {
		Totals struct {
			Tasks       int64 `json:"tasks"`
			TotalTokens int64 `json:"totalTokens"`
		} `json:"totals"`
	}
	usagePath := fmt.Sprintf("/api/v1/tenant/%d/usage", tn.EnvID)
	require.Eventually(t, func() bool {
		code := s.admin(t, http.MethodGet, usagePath, nil, &usage)
		return code == http.StatusOK && usage.Totals.TotalTokens >= tokens && usage.Totals.Tasks >= 1
	}, 20*time.Second, 100*time.Millisecond, "usage of tenant %d shows the task's %d tokens", tn.EnvID, tokens)
	require.Equal(t, tokens, usage.Totals.TotalTokens, "recorded exactly once")

	// Destroy: the container is gone and the key is refused.
	var destroyed struct {
		Tenant tenant `json:"tenant"`
	}
	code = s.admin(t, http.MethodDelete, fmt.Sprintf("/api/v1/tenant/%d", tn.EnvID), nil, &destroyed)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "destroyed", destroyed.Tenant.Status)

	_, err = sdk.Task(t.Context(), ans.TaskID)
	var clientErr *client.ClientError
	require.ErrorAs(t, err, &clientErr)
	require.Equal(t, http.StatusUnauthorized, clientErr.StatusCode)
	code, _ = s.do(t, http.MethodPost, "/api/v1/converge", tn.APIKey, map[string]any{"prompt": "still there?"})
	require.Equal(t, http.StatusUnauthorized, code)

	code, _ = call(t, http.MethodGet, tenantURL+"/health", "", nil)
	require.Zero(t, code, "nothing answers on the destroyed tenant's port")

	// Every event the flow published keeps the contract: each service's outbox holds the
	// bytes its relay sent.
	require.Eventually(t, func() bool {
		var destroyedFacts int
		require.NoError(t, s.Pool.QueryRow(t.Context(), `SELECT count(*) FROM provisioner.outbox WHERE subject LIKE 'tenant.lifecycle.destroyed.%'`).Scan(&destroyedFacts))
		return destroyedFacts > 0
	}, 10*time.Second, 50*time.Millisecond)
	v, err := eventstest.NewValidator()
	require.NoError(t, err)
	rows, err := s.Pool.Query(t.Context(), `
		SELECT subject, payload FROM api.outbox UNION ALL SELECT subject, payload FROM provisioner.outbox
		UNION ALL SELECT subject, payload FROM converger.outbox`)
	require.NoError(t, err)
	types := map[string]bool{}
	for rows.Next() {
		var subject string
		var payload []byte
		require.NoError(t, rows.Scan(&subject, &payload))
		require.NoError(t, v.Validate(payload), "%s: %s", subject, payload)
		env, err := events.Decode(payload)
		require.NoError(t, err)
		types[env.Type] = true
	}
	require.NoError(t, rows.Err())
	for _, typ := range []string{events.TypeTenantSpawn, events.TypeTenantLifecycle, events.TypeConvergeRequest,
		events.TypeConvergeCompleted, events.TypeTenantDestroy} {
		require.True(t, types[typ], "the flow published a %s", typ)
	}

	// After a whole flow every metric the dashboards name has its series (some come only with
	// their first event, such as a spawn's time).
	code, metrics := call(t, http.MethodGet, "http://"+s.Config.OpsAddr+"/metrics", "", nil)
	require.Equal(t, http.StatusOK, code)
	for _, name := range grafana.Metrics() {
		require.Regexp(t, `(?m)^`+name+`[{ ]`, string(metrics), "a dashboard names %s, which the platform does not serve", name)
	}
}
