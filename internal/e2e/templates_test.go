package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	tenanttemplates "github.com/convergence-dev/convergence/tenant-templates"
)

// The three templates pass one conformance suite: a spawn that names the language gives a
// running, healthy tenant on its image, whose app serves the same surface, converging through
// the platform with its own key, passing on the task's settings and its caller's request id,
// and refusing bad bodies the same way.
func TestTemplates_GoNodeAndPython_PassOneConformanceSuite(t *testing.T) {
	t.Parallel()
	dockertest.TenantImage(t)
	dockertest.TemplateImages(t)
	s := startStack(t)
	var listed struct {
		Templates []struct {
			Language, Framework, Image string
			Default, Available         bool
		}
	}
	require.Equal(t, http.StatusOK, s.admin(t, http.MethodGet, "/api/v1/templates", nil, &listed))
	require.Len(t, listed.Templates, 3)
	for _, tpl := range listed.Templates {
		require.True(t, tpl.Available, "%s's image is built", tpl.Language)
		require.Equal(t, tpl.Language == "go", tpl.Default)
	}
	for _, c := range []struct{ language, framework, image string }{
		{"go", "", tenanttemplates.GoImage},
		{"node", "express", tenanttemplates.NodeImage},
		{"python", "", tenanttemplates.PythonImage},
	} {
		t.Run(c.language, func(t *testing.T) {
			t.Parallel()
			body := map[string]any{"name": "e2e-tpl-" + c.language, "language": c.language}
			if c.framework != "" {
				body["framework"] = c.framework
			}
			tn := s.spawnWith(t, body, false)
			require.Equal(t, "running", tn.Status)
			require.Equal(t, c.image, tn.Image)
			url := fmt.Sprintf("http://127.0.0.1:%d", tn.Port)
			code, raw := call(t, http.MethodGet, url+"/health", "", nil)
			require.Equal(t, http.StatusOK, code, "%s", raw)
			require.Eventually(t, func() bool {
				var st struct{ Tenant tenant }
				return s.admin(t, http.MethodGet, fmt.Sprintf("/api/v1/tenant/%d/status", tn.EnvID), nil, &st) == http.StatusOK &&
					st.Tenant.Health == "healthy"
			}, time.Minute, 250*time.Millisecond, "the image's own health check passes")

			// Converge through the app, with the task's settings and a request id passed on.
			requestID := "conformance-" + c.language
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/api/design", strings.NewReader(
				`{"prompt":"Design a password reset flow [sim:converge]","agentARole":"Security Expert","agentBRole":"UX Designer","maxRounds":4,"tokenBudget":50000,"timeoutSeconds":120}`))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Request-ID", requestID)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			var ans struct {
				Success          bool
				TaskID           string
				Status           string
				ConvergenceScore *int
				Task             struct {
					Type, AgentARole, RequestID string
					MaxRounds                   int
				}
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&ans))
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.True(t, ans.Success)
			require.Equal(t, "completed", ans.Status)
			require.NotNil(t, ans.ConvergenceScore)
			require.Equal(t, "design", ans.Task.Type)
			require.Equal(t, "Security Expert", ans.Task.AgentARole)
			require.Equal(t, 4, ans.Task.MaxRounds)
			require.Equal(t, requestID, ans.Task.RequestID, "the caller's request id reaches the platform")

			code, raw = call(t, http.MethodGet, url+"/api/converge/"+ans.TaskID, "", nil)
			require.Equal(t, http.StatusOK, code, "%s", raw)
			require.Contains(t, string(raw), `"convergenceScore":`)

			// Bad bodies are refused by the app itself, in the platform's error shape.
			for _, bad := range []map[string]any{{}, {"prompt": "x", "colour": "blue"}, {"prompt": "x", "type": "review"}} {
				code, raw = call(t, http.MethodPost, url+"/api/design", "", bad)
				require.Equal(t, http.StatusBadRequest, code, "%v: %s", bad, raw)
				require.Contains(t, string(raw), `"code":"invalid_request"`)
			}
			code, raw = call(t, http.MethodGet, url+"/api/converge/tsk_unknown", "", nil)
			require.Equal(t, http.StatusNotFound, code, "the platform's 404 passed through: %s", raw)
		})
	}
}
