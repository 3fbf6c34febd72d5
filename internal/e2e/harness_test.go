package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/platform"
	"github.com/convergence-dev/convergence/pkg/client"
	"github.com/convergence-dev/convergence/services/converger"
	"github.com/convergence-dev/convergence/services/provisioner/egress"
)

const adminToken = "e2e-admin-token-0123456789abcdef"

// stack is a running platform as a test sees it from the outside.
type stack struct {
	// API is the platform's API as this process reaches it.
	API string
	// Pool is a pool on the platform's database, for what only an operator's SQL can set
	// (a tenant's rate limits).
	Pool *pgxpool.Pool
	// Config is the platform's configuration, addresses included.
	Config platform.Config
	// TenantAPIPort is the host port tenant containers reach the API on: a proxy in front of
	// it, so that their calls are checked against the OpenAPI document as the tests' own are.
	TenantAPIPort int
	// Egress names the installation's egress policy (its firewall table and bridge prefix).
	Egress egress.Policy
	// logs holds every line the platform logged, at debug level and up.
	logs *syncBuffer
}

// syncBuffer is a bytes.Buffer that many goroutines may write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logs returns what the platform has logged so far.
func (s *stack) Logs() string { return s.logs.String() }

// startStack runs the whole platform in-process until the test ends and waits until it is
// ready; options change its configuration before it starts. Tenant containers reach the API as
// host.docker.internal (the Docker host's gateway address) through a proxy on every interface,
// whose calls go through http.DefaultTransport and so through openapi.Checked's validation;
// the provisioner's containers, networks and ports are scoped to this test.
func startStack(t *testing.T, options ...func(*platform.Config)) *stack {
	t.Helper()
	var cfg platform.Config
	fs := flag.NewFlagSet("e2e", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))

	// The proxy's port is taken first and held, so that none of the ports picked below is it.
	proxyLn, err := net.Listen("tcp", "0.0.0.0:0") //nolint:gosec // Tenant containers reach it through the Docker host's gateway.
	require.NoError(t, err)
	port := freePort(t)
	cfg.HTTPAddr = net.JoinHostPort("0.0.0.0", strconv.Itoa(port))
	cfg.OpsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	cfg.NATSListen = ""
	cfg.DataDir = t.TempDir()
	db := pgtest.NewDB(t)
	cfg.DatabaseURL = db.URL
	cfg.API.AdminToken = adminToken
	cfg.Converger.Provider = converger.ProviderSimulated

	dockertest.TenantImage(t) // every flow spawns the default template
	run := dockertest.NewRun(t, dockertest.Client(t))
	cfg.Provisioner.Runtime.NamePrefix = run.Prefix
	cfg.Provisioner.Runtime.Labels = run.Labels
	first, last := dockertest.PortRange(t, 4)
	cfg.Provisioner.Ports = fmt.Sprintf("%d-%d", first, last)
	tenantPort := tenantProxy(t, proxyLn, fmt.Sprintf("127.0.0.1:%d", port))
	cfg.Provisioner.TenantAPIURL = fmt.Sprintf("http://host.docker.internal:%d", tenantPort)
	cfg.Provisioner.DestroyGrace = 2 * time.Second
	for _, o := range options {
		o(&cfg)
	}

	// The test's egress rules leave the host's firewall with it, once the platform has stopped
	// (a running provisioner would install them again).
	t.Cleanup(func() {
		if p, err := platform.EgressPolicy(cfg); err == nil {
			_ = p.Remove()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { done <- platform.Run(ctx, cfg, logger) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "platform stopped with an error")
		case <-time.After(60 * time.Second):
			t.Error("platform did not stop within 60s")
		}
	})

	s := &stack{API: fmt.Sprintf("http://127.0.0.1:%d", port), Pool: db.Pool, Config: cfg, TenantAPIPort: tenantPort, logs: logs}
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("platform stopped early: %v", err)
		default:
		}
		code, _ := s.do(t, http.MethodGet, "/readyz", "", nil)
		return code == http.StatusOK
	}, 60*time.Second, 50*time.Millisecond, "platform ready")
	policy, err := platform.EgressPolicy(cfg)
	require.NoError(t, err)
	s.Egress = policy
	return s
}

// tenantProxy serves on ln, until the test ends, a reverse proxy to the API at apiAddr, and
// returns its port. It sends with http.DefaultTransport, which openapi.Checked replaced with its
// validating one: what tenant apps send and are answered is checked too.
func tenantProxy(t *testing.T, ln net.Listener, apiAddr string) int {
	t.Helper()
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: apiAddr})
	proxy.FlushInterval = -1 // Event streams go through as they are written.
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}}
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().(*net.TCPAddr).Port
}

// freePort returns a TCP port that is free on every interface now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0") //nolint:gosec // The API must be reachable from containers.
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// do sends a request to the API with token (admin or tenant; "" for none) and returns the
// status and the body. A failed connection is answered as status 0.
func (s *stack) do(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	base := s.API
	if token == adminToken && s.Config.AdminAddr != "" {
		base = "http://" + s.Config.AdminAddr // the admin routes have a listener of their own
	}
	return call(t, method, base+path, token, body)
}

// admin sends a request with the admin token and decodes a JSON answer into out.
func (s *stack) admin(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	code, raw := s.do(t, method, path, adminToken, body)
	if out != nil && len(raw) > 0 {
		require.NoError(t, json.Unmarshal(raw, out), "answer of %s %s: %s", method, path, raw)
	}
	return code
}

func call(t *testing.T, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, raw
}

// tenant is a spawned tenant: the spawn answer's fields a test uses.
type tenant struct {
	EnvID  int64  `json:"envId"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Health string `json:"health"`
	Port   int    `json:"port"`
	APIKey string `json:"apiKey"`
	Image  string `json:"image"`
	Egress string `json:"egress"`
	// ContainerName is the tenant's container on the Docker engine.
	ContainerName string `json:"containerName"`
}

// spawn spawns a tenant of the default template named name and, unless async, waits until the
// provisioner has run it.
func (s *stack) spawn(t *testing.T, name string, async bool) tenant {
	t.Helper()
	return s.spawnWith(t, map[string]any{"name": name}, async)
}

// spawnWith is spawn with the request's body.
func (s *stack) spawnWith(t *testing.T, body map[string]any, async bool) tenant {
	t.Helper()
	path := "/api/v1/tenant/spawn"
	want := http.StatusCreated
	if async {
		path += "?async=true"
		want = http.StatusAccepted
	}
	var ans struct {
		Tenant tenant `json:"tenant"`
	}
	code, raw := s.do(t, http.MethodPost, path, adminToken, body)
	require.Equal(t, want, code, "spawn %v: %s", body, raw)
	require.NoError(t, json.Unmarshal(raw, &ans))
	require.NotEmpty(t, ans.Tenant.APIKey, "the spawn answer carries the tenant's key")
	return ans.Tenant
}

// limitCreates sets the tenant's bucket for creating tasks to burst at once and perMinute
// sustained, as an operator does for a noisy tenant.
func (s *stack) limitCreates(t *testing.T, envID int64, perMinute float64, burst int) {
	t.Helper()
	_, err := s.Pool.Exec(t.Context(), `
		INSERT INTO api_rate_limits (env_id, class, per_minute, burst) VALUES ($1, 'converge.create', $2, $3)
		ON CONFLICT (env_id, class) DO UPDATE SET per_minute = EXCLUDED.per_minute, burst = EXCLUDED.burst`,
		envID, perMinute, burst)
	require.NoError(t, err)
}

// sdk returns a tenant SDK client on the real API with key.
func (s *stack) sdk(t *testing.T, key string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(s.API, key, opts...)
	require.NoError(t, err)
	return c
}

// delivery is a webhook delivery as its receiver got it.
type delivery struct {
	header http.Header
	body   []byte
}

// webhookReceiver serves webhooks until the test ends and returns its URL and a function that
// waits up to a minute for the first delivery.
func webhookReceiver(t *testing.T) (url string, first func() delivery) {
	t.Helper()
	deliveries := make(chan delivery, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case deliveries <- delivery{r.Header.Clone(), body}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() delivery {
		t.Helper()
		select {
		case d := <-deliveries:
			return d
		case <-time.After(time.Minute):
			t.Fatal("no webhook delivery within a minute")
			return delivery{}
		}
	}
}
