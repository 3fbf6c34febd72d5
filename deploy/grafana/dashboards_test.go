package grafana_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/deploy/grafana"
)

func TestDashboards_FilesAreWhatTheCodeMakes(t *testing.T) {
	t.Parallel()
	want, err := grafana.Render()
	require.NoError(t, err)
	files, err := filepath.Glob("dashboards/*.json")
	require.NoError(t, err)
	require.Len(t, files, len(want), "one file per dashboard, and no other: run make dashboards")
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	require.Equal(t, string(grafana.Markdown()), string(readme), "README.md is out of date: run make dashboards")
	plugins.RegisterDefaultPlugins()
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join("dashboards", name))
		require.NoError(t, err, "run make dashboards")
		require.Equal(t, string(b), string(got), "%s is out of date: run make dashboards", name)

		// Grafana's own model reads it back.
		var d dashboard.Dashboard //nolint:staticcheck // The classic model, which the files are in.
		require.NoError(t, json.Unmarshal(got, &d), name)
		require.NotEmpty(t, d.Panels, name)
	}
}

// TestDashboards_EveryQueryParsesAndNamesAPlatformMetric has Prometheus's own tool parse every
// panel's query, as a recording rule, with Grafana's range variables given values. That the
// metrics exist is checked after a whole flow on a running platform (internal/e2e).
func TestDashboards_EveryQueryParsesAndNamesAPlatformMetric(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		// make deps unpacks it here.
		if promtool, err = exec.LookPath("../../bin/tools/promtool"); err != nil {
			t.Fatal("promtool is neither on PATH nor in bin/tools: run make deps")
		}
	}
	require.Contains(t, grafana.Metrics(), "convergence_outbox_relay_lag_seconds_bucket")
	metric := regexp.MustCompile(`\bconvergence_[a-z0-9_]+`)
	variables := strings.NewReplacer("$__rate_interval", "1m", "$__range", "1h")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	n := 0
	for _, b := range grafana.Boards() {
		for _, p := range b.Panels {
			require.NotEmpty(t, p.Queries, "%s: %s has no query", b.Title, p.Title)
			for _, q := range p.Queries {
				require.Regexp(t, metric, q.Expr, "%s: %s: a query of no platform metric", b.Title, p.Title)
				expr, err := json.Marshal(variables.Replace(q.Expr)) // A JSON string is a YAML string.
				require.NoError(t, err)
				fmt.Fprintf(&rules, "      - record: dashboard_query_%d\n        expr: %s\n", n, expr)
				n++
			}
		}
	}
	file := filepath.Join(t.TempDir(), "queries.yml")
	require.NoError(t, os.WriteFile(file, []byte(rules.String()), 0o600))
	out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput()
	require.NoError(t, err, "promtool check rules:\n%s", out)
	require.Contains(t, string(out), fmt.Sprintf("SUCCESS: %d rules found", n))
}
