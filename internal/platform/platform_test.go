package platform_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/platform"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

var discard = slog.New(slog.DiscardHandler)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// sharedDataDir returns a data dir the postgres user can reach when the tests run as root.
func sharedDataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "platform-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o711))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "data")
}

func testConfig(t *testing.T) platform.Config {
	t.Helper()
	var cfg platform.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	cfg.HTTPAddr = freeAddr(t)
	cfg.OpsAddr = freeAddr(t)
	cfg.NATSListen = ""
	cfg.API.AdminToken = "test-admin-token-0123456789"
	// The provisioner's objects are scoped to this test, so it never takes another
	// installation's tenants on this engine for orphans.
	run := dockertest.NewRun(t, dockertest.Client(t))
	cfg.Provisioner.Runtime.NamePrefix = run.Prefix
	cfg.Provisioner.Runtime.Labels = run.Labels
	first, last := dockertest.PortRange(t, 8)
	cfg.Provisioner.Ports = fmt.Sprintf("%d-%d", first, last)
	return cfg
}

// start runs the platform until the test ends and waits until it is ready.
func start(t *testing.T, cfg platform.Config) (stop func() error) {
	t.Helper()
	// The tenants' egress rules the provisioner, if it runs, installs leave the host's
	// firewall with the test, once the platform has stopped (it would install them again).
	t.Cleanup(func() {
		if p, err := platform.EgressPolicy(cfg); err == nil {
			_ = p.Remove()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- platform.Run(ctx, cfg, discard) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			return fmt.Errorf("platform did not stop within 60s")
		}
	}
	t.Cleanup(func() { require.NoError(t, stop()) })
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("platform stopped early: %v", err)
		default:
		}
		resp, err := http.Get("http://" + cfg.HTTPAddr + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 50*time.Millisecond)
	return stop
}

// connectAs connects to the NATS server the platform of cfg runs (listening on cfg.NATSListen)
// as a new user of role, issued by the authority in its data dir.
func connectAs(t *testing.T, cfg platform.Config, role natsauth.Role) *nats.Conn {
	t.Helper()
	auth, err := natsauth.Load(filepath.Join(cfg.DataDir, "nats-auth"))
	require.NoError(t, err)
	opts, err := auth.Connect(role, "test-"+string(role))
	require.NoError(t, err)
	nc, err := nats.Connect("nats://"+cfg.NATSListen, opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestRun_AllTargets_ServesHealthReadyAndLintCleanMetrics(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DatabaseURL = pgtest.NewDB(t).URL
	cfg.DataDir = t.TempDir()
	start(t, cfg)

	code, _ := get(t, "http://"+cfg.HTTPAddr+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, _ = get(t, "http://"+cfg.HTTPAddr+"/readyz")
	require.Equal(t, http.StatusOK, code)

	code, _ = get(t, "http://"+cfg.HTTPAddr+"/metrics")
	require.Equal(t, http.StatusNotFound, code, "metrics only on the ops listener")
	code, body := get(t, "http://"+cfg.OpsAddr+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "convergence_outbox_published_total")
	require.Contains(t, body, "go_goroutines")
	require.Contains(t, body, "process_resident_memory_bytes")
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	require.NoError(t, err)
	require.Empty(t, problems)

	// Every metric the alert rules name is served, before anything has happened that the
	// rules watch for: an alert on a series that appears only with its first event would miss
	// that event. The consumers announce their series once they start.
	rules, err := os.ReadFile("../../deploy/prometheus/rules/convergence.yml")
	require.NoError(t, err)
	names := map[string]bool{}
	for _, line := range strings.Split(string(rules), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue // A comment, not a rule.
		}
		for _, name := range regexp.MustCompile(`\bconvergence_[a-z0-9_]+`).FindAllString(line, -1) {
			names[name] = true
		}
	}
	require.Contains(t, names, "convergence_http_requests_total", "the rules were read")
	require.Eventually(t, func() bool {
		_, body = get(t, "http://"+cfg.OpsAddr+"/metrics")
		for name := range names {
			if !served(body, name) {
				t.Logf("not served yet: %s", name)
				return false
			}
		}
		return true
	}, 30*time.Second, 250*time.Millisecond, "every metric the alert rules name is in /metrics")
	require.Contains(t, body, `convergence_check_up{check="postgres-api"} 1`)
}

// served reports whether the Prometheus text exposition body has a sample of name, or
// declares the family name (a histogram's _bucket and _count samples are its family's).
func served(body, name string) bool {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, "# TYPE "+name+" ") {
			return true
		}
	}
	return false
}

func TestRun_NoDatabaseURL_LocalPostgresStopsWithProcessAndRestartsOnSameData(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DataDir = sharedDataDir(t)
	stop := start(t, cfg)
	require.NoError(t, stop())
	require.Empty(t, postgresProcessesIn(t, filepath.Join(cfg.DataDir, "postgres")), "no PostgreSQL left running")

	// A second start on the same data dir reuses the cluster, the store and the admin token.
	cfg.HTTPAddr, cfg.OpsAddr = freeAddr(t), freeAddr(t)
	stop = start(t, cfg)
	require.NoError(t, stop())
	require.Empty(t, postgresProcessesIn(t, filepath.Join(cfg.DataDir, "postgres")))
}

func TestRun_NoAdminToken_GeneratesOneAndKeepsIt(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DatabaseURL = pgtest.NewDB(t).URL
	cfg.DataDir = t.TempDir()
	cfg.API.AdminToken = ""
	stop := start(t, cfg)
	require.NoError(t, stop())
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin-token"))
	require.NoError(t, err)
	info, err := os.Stat(filepath.Join(cfg.DataDir, "admin-token"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	cfg.HTTPAddr, cfg.OpsAddr = freeAddr(t), freeAddr(t)
	start(t, cfg)
	req, err := http.NewRequest(http.MethodGet, "http://"+cfg.HTTPAddr+"/api/v1/whoami", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(tok)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the saved token still admits the operator")
}

func TestRun_AdminAddr_AdminRoutesOnlyThere(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Target = platform.TargetAPI
	cfg.DatabaseURL = pgtest.NewDB(t).URL
	cfg.DataDir = t.TempDir()
	cfg.AdminAddr = freeAddr(t)
	start(t, cfg)
	asAdmin := func(addr, path string) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+cfg.API.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, asAdmin(cfg.AdminAddr, "/api/v1/whoami"))
	require.NotEqual(t, http.StatusOK, asAdmin(cfg.HTTPAddr, "/api/v1/whoami"), "the address tenants call has no admin routes")
	require.Equal(t, http.StatusNotFound, asAdmin(cfg.AdminAddr, "/api/v1/me"), "and the admin listener no tenant routes")
	code, _ := get(t, "http://"+cfg.HTTPAddr+"/api/v1/me")
	require.Equal(t, http.StatusUnauthorized, code, "the tenant routes are where they were")
}

func TestRun_BadConfiguration_FailsAtStartWithOneClearLine(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = busy.Close() })

	tests := []struct {
		name   string
		change func(*platform.Config)
		want   []string
	}{
		{"unknown target", func(c *platform.Config) { c.Target = "api,billing" }, []string{`unknown target "billing"`, "all, or a comma list of api, provisioner, converger, metering"}},
		{"port in use", func(c *platform.Config) { c.HTTPAddr = busy.Addr().String() }, []string{"address already in use", "CONVERGENCE_HTTP_ADDR"}},
		{"unreachable database", func(c *platform.Config) { c.DatabaseURL = "postgres://user:secret@127.0.0.1:1/db?connect_timeout=2" }, []string{"is not reachable", "check DATABASE_URL", "user:xxxxx@127.0.0.1:1"}},
		{"invalid database URL", func(c *platform.Config) { c.DatabaseURL = "mysql://nope" }, []string{"is not valid", "DATABASE_URL"}},
		{"short admin token", func(c *platform.Config) { c.API.AdminToken = "short" }, []string{"at least 16 characters", "CONVERGENCE_ADMIN_TOKEN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.DataDir = t.TempDir()
			cfg.DatabaseURL = "postgres://127.0.0.1:1/unused?connect_timeout=2"
			tt.change(&cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			err := platform.Run(ctx, cfg, discard)
			require.Error(t, err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "secret", "no password in errors")
			require.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

// postgresProcessesIn lists the live processes whose working directory is dir: a PostgreSQL
// server and its workers run there.
func postgresProcessesIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []string
	for _, e := range entries {
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == dir {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestRun_NATSCredsOfAnotherService_RefusedAtStart(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	err := runWithCreds(t, platform.TargetConverger, srv.URL(), credsFile(t, srv, natsauth.Metering))
	require.ErrorContains(t, err, "is a metering user, which may not do what converger does")
}

func TestRun_NATSUnreachable_FailsAtStartWithoutPanicking(t *testing.T) {
	t.Parallel()
	// A service user does not set up the streams: the first thing to fail is its connection.
	err := runWithCreds(t, platform.TargetAPI, "nats://127.0.0.1:1", credsFile(t, natstest.Start(t), natsauth.API))
	require.ErrorContains(t, err, "connect to nats at nats://127.0.0.1:1")
}

// credsFile writes the credentials of a new user of role, issued by srv, and returns its path.
func credsFile(t *testing.T, srv *natstest.Server, role natsauth.Role) string {
	t.Helper()
	creds, err := srv.Auth.Creds(role, string(role), 0)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), string(role)+".creds")
	require.NoError(t, os.WriteFile(file, creds, 0o600))
	return file
}

// runWithCreds runs target connected to natsURL with the credentials in file, on a fresh
// database, and returns how Run ended.
func runWithCreds(t *testing.T, target, natsURL, file string) error {
	t.Helper()
	cfg := testConfig(t)
	cfg.Target = target
	cfg.DatabaseURL = pgtest.NewDB(t).URL
	cfg.DataDir = t.TempDir()
	cfg.NATSURL, cfg.NATSCreds = natsURL, file
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	return platform.Run(ctx, cfg, discard)
}
