package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/platform"
)

// An alert goes the whole way an operator relies on: a tenant's container stops answering its
// health checks, the provisioner reports it unhealthy in its metrics, Prometheus (Debian's
// binary) scrapes them and evaluates the stack's own rules file, Alertmanager (Debian's binary)
// groups the alert and posts it to the platform's receiver, which lists it at GET /alerts.
// Only the rules' `for:` durations are shortened, so the test does not wait five minutes;
// promtool's unit tests (deploy/prometheus) check the rules with their real durations.
func TestAlerts_AnUnhealthyTenantReachesThePlatformsReceiverThroughAlertmanager(t *testing.T) {
	t.Parallel()
	prometheus, alertmanager := tool(t, "prometheus"), tool(t, "alertmanager")
	s := startStack(t, func(c *platform.Config) {
		c.Provisioner.HealthInterval = time.Second
		c.Provisioner.ReconcileInterval = 2 * time.Second // which sets the tenant gauges
	})
	tn := s.spawn(t, "alerted", false)

	dir := t.TempDir()
	amAddr, promAddr := loopbackAddr(t), loopbackAddr(t)
	write(t, dir, "alertmanager.yml", fmt.Sprintf(`
route: {receiver: platform, group_by: [alertname], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}
receivers:
  - name: platform
    webhook_configs: [{url: "http://%s/alerts", send_resolved: true}]
`, s.Config.OpsAddr))
	rules, err := os.ReadFile("../../deploy/prometheus/rules/convergence.yml")
	require.NoError(t, err)
	write(t, dir, "rules.yml", string(regexp.MustCompile(`(?m)^(\s+for:) .*$`).ReplaceAll(rules, []byte("${1} 0s"))))
	write(t, dir, "prometheus.yml", fmt.Sprintf(`
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
alerting: {alertmanagers: [{static_configs: [{targets: [%q]}]}]}
scrape_configs:
  - job_name: convergence
    static_configs: [{targets: [%q], labels: {service: all}}]
`, filepath.Join(dir, "rules.yml"), amAddr, s.Config.OpsAddr))
	run(t, alertmanager, "--config.file="+filepath.Join(dir, "alertmanager.yml"), "--storage.path="+filepath.Join(dir, "am"),
		"--web.listen-address="+amAddr, "--cluster.listen-address=")
	run(t, prometheus, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "prom"),
		"--web.listen-address="+promAddr)

	// Prometheus has evaluated the rule, on a scrape of a healthy tenant, and it does not fire.
	require.Eventually(t, func() bool {
		state, ok := ruleState(t, promAddr, "TenantUnhealthy")
		return ok && state == "inactive"
	}, time.Minute, 500*time.Millisecond, "Prometheus evaluates TenantUnhealthy on the platform's metrics")
	require.Empty(t, received(t, s, "TenantUnhealthy"), "no alert while the tenant is healthy")

	// Cut the container off its network: the published port no longer reaches the app.
	docker := dockertest.Client(t)
	c, err := docker.ContainerInspect(t.Context(), tn.ContainerName)
	require.NoError(t, err)
	for name := range c.NetworkSettings.Networks {
		require.NoError(t, docker.NetworkDisconnect(t.Context(), name, c.ID, true))
	}

	require.Eventually(t, func() bool { return len(received(t, s, "TenantUnhealthy")) > 0 },
		90*time.Second, 500*time.Millisecond, "TenantUnhealthy arrives at the platform's receiver")
	alert := received(t, s, "TenantUnhealthy")[0]
	require.Equal(t, "firing", alert.Status)
	require.Equal(t, "ticket", alert.Labels["severity"])
	require.Equal(t, "1 tenant containers are unhealthy", alert.Annotations["summary"])
	require.Contains(t, s.Logs(), `"msg":"alert firing","alertname":"TenantUnhealthy"`, "the receiver logs it")
}

// tool returns the path of the Prometheus tool name: on PATH, or in bin/tools, where make deps
// unpacks it from Debian's package.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p, err := filepath.Abs("../../bin/tools/" + name)
	require.NoError(t, err)
	_, err = os.Stat(p)
	require.NoError(t, err, "%s is neither on PATH nor in bin/tools: run make deps", name)
	return p
}

func loopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600))
}

// run starts a program until the test ends; its output is shown if the test fails.
func run(t *testing.T, program string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s:\n%s", filepath.Base(program), out.String())
		}
	})
}

// ruleState returns the state (inactive, pending, firing) of the alerting rule name in the
// Prometheus at addr, once the rule has been evaluated.
func ruleState(t *testing.T, addr, name string) (string, bool) {
	t.Helper()
	code, raw := call(t, http.MethodGet, "http://"+addr+"/api/v1/rules?type=alert", "", nil)
	if code != http.StatusOK {
		return "", false
	}
	var ans struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, State, Health string
					LastEvaluation      time.Time
				}
			}
		}
	}
	require.NoError(t, json.Unmarshal(raw, &ans))
	for _, g := range ans.Data.Groups {
		for _, r := range g.Rules {
			if r.Name == name && r.Health == "ok" && !r.LastEvaluation.IsZero() {
				return r.State, true
			}
		}
	}
	return "", false
}

// receivedAlert is an alert as the platform's receiver lists it.
type receivedAlert struct {
	Status      string
	Labels      map[string]string
	Annotations map[string]string
}

// received returns the alerts named name the platform's receiver has been sent.
func received(t *testing.T, s *stack, name string) []receivedAlert {
	t.Helper()
	code, raw := call(t, http.MethodGet, "http://"+s.Config.OpsAddr+"/alerts", "", nil)
	require.Equal(t, http.StatusOK, code, "%s", raw)
	var ans struct{ Alerts []receivedAlert }
	require.NoError(t, json.Unmarshal(raw, &ans))
	var named []receivedAlert
	for _, a := range ans.Alerts {
		if a.Labels["alertname"] == name {
			named = append(named, a)
		}
	}
	return named
}
