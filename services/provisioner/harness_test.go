package provisioner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/services/api"
	"github.com/convergence-dev/convergence/services/provisioner"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
	"github.com/convergence-dev/convergence/services/provisioner/runtime/swarmtest"
)

const adminToken = "test-admin-token-0123456789"

// ports is the size of each test's tenant port range.
const portsPerTest = 24

// harness is the platform's provisioning path in one test: the API on an httptest server and
// the provisioner on one fresh database and one embedded JetStream, with the outbox relay
// between them, driving the real Docker engine under the test's own labels, name prefix and
// port range.
type harness struct {
	t testing.TB
	// pool sees every service's tables, for fixtures and checks; provPool is the
	// provisioner's role, with its outbox ob.
	pool     *pgxpool.Pool
	provPool *pgxpool.Pool
	apiPool  *pgxpool.Pool // the API's role, with its outbox apiOb
	apiOb    *outbox.Outbox
	nc       *nats.Conn          // the provisioner's connection, as its own user
	js       jetstream.JetStream //
	apiNC    *nats.Conn          // the API's
	apiJS    jetstream.JetStream
	nats     *natstest.Server
	ob       *outbox.Outbox
	cli      *client.Client
	run      dockertest.Run
	image    string
	cfg      provisioner.Config
	url      string
	svc      *provisioner.Service
	stopFn   func()
	kill     context.CancelFunc   // stops the instance without waiting
	reg      *prometheus.Registry // the instance's metrics
	logger   *slog.Logger
	// basePort is the first of the ports the benchmark's baselines publish on.
	basePort int
}

type option func(*provisioner.Config)

func newHarness(t testing.TB, opts ...option) *harness {
	t.Helper()
	h := &harness{t: t, logger: slog.New(slog.DiscardHandler)}
	if testing.Verbose() && os.Getenv("PROVISIONER_TEST_LOGS") != "" {
		h.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	db := pgtest.NewDB(t)
	h.pool = db.Pool
	h.provPool = db.For(t, pgrole.Provisioner)
	h.apiPool = db.For(t, pgrole.API)

	srv := natstest.Start(t)
	h.nats = srv
	h.nc, h.apiNC = srv.ConnectAs(natsauth.Provisioner), srv.ConnectAs(natsauth.API)
	var err error
	h.js, err = jetstream.New(h.nc)
	require.NoError(t, err)
	h.apiJS, err = jetstream.New(h.apiNC)
	require.NoError(t, err)
	h.ob = outbox.New(h.provPool)
	h.apiOb = outbox.New(h.apiPool)
	relayCtx, stopRelay := context.WithCancel(context.Background())
	var relays sync.WaitGroup
	for ob, js := range map[*outbox.Outbox]jetstream.JetStream{h.ob: h.js, h.apiOb: h.apiJS} {
		relays.Go(func() {
			_ = outbox.NewRelay(ob, js, outbox.RelayConfig{PollInterval: 100 * time.Millisecond}, h.logger, prometheus.NewRegistry()).Run(relayCtx)
		})
	}
	t.Cleanup(func() { stopRelay(); relays.Wait() })

	e := httpx.NewEcho(h.logger)
	_, err = api.New(api.Config{AdminToken: adminToken, MaxBodyBytes: 1 << 20},
		api.Deps{Pool: h.apiPool, Outbox: h.apiOb, NC: h.apiNC, JS: h.apiJS, Echo: e, Logger: h.logger, Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	hs := httptest.NewServer(e)
	t.Cleanup(hs.Close)
	h.url = hs.URL

	h.cli = dockertest.Client(t)
	h.image = dockertest.TenantImage(t)
	h.run = dockertest.NewRun(t, h.cli)
	first, last := dockertest.PortRange(t, portsPerTest)
	h.cfg = provisioner.Config{
		Runtime:           runtime.DockerConfig{NamePrefix: h.run.Prefix, Labels: h.run.Labels, ReplaceGrace: time.Second},
		StateDir:          t.TempDir(),
		Ports:             fmt.Sprintf("%d-%d", first, last),
		Concurrency:       20,
		HealthTimeout:     20 * time.Second,
		SpawnTimeout:      40 * time.Second,
		DestroyGrace:      2 * time.Second,
		HealthInterval:    time.Second,
		ReconcileInterval: 2 * time.Second,
		OrphanGrace:       time.Minute,
		StuckAfter:        2 * time.Minute,
	}
	for _, o := range opts {
		o(&h.cfg)
	}
	if h.cfg.RuntimeKind == provisioner.RuntimeSwarm {
		// After NewRun's cleanup, so it runs before it: services first, which takes their
		// tasks' containers off the networks NewRun's cleanup removes.
		t.Cleanup(func() { swarmtest.RemoveLabelled(t, h.cli, h.run.Labels) })
	}
	h.start()
	return h
}

// onSwarm runs the test's provisioner with the Swarm runtime, making the engine a single-node
// swarm first if it is none (swarmtest.Require). Ports are published in host mode, which works
// on a kernel without IPVS.
func onSwarm(t testing.TB) option {
	t.Helper()
	swarmtest.Require(t)
	return func(c *provisioner.Config) {
		c.RuntimeKind = provisioner.RuntimeSwarm
		c.Runtime.HostIP = "0.0.0.0"
		c.Swarm.PublishMode = runtime.PublishHost
	}
}

// firstPort is the lowest port of the test's range.
func (h *harness) firstPort() int {
	var first int
	_, err := fmt.Sscanf(h.cfg.Ports, "%d-", &first)
	require.NoError(h.t, err)
	return first
}

// start runs a new provisioner instance until stop (or the test's end) and waits until it has
// registered its key and port range and, leading, finished its reconciler's pass at start.
// prepare runs on the service before it starts.
func (h *harness) start(prepare ...func(*provisioner.Service)) {
	h.t.Helper()
	svc, reg, kill, stop := h.launch(prepare...)
	h.svc, h.reg, h.kill, h.stopFn = svc, reg, kill, stop
	require.Eventually(h.t, func() bool {
		var keys, low int
		err := h.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM provisioner_keys), (SELECT coalesce(min(port), 0) FROM tenant_ports)`).Scan(&keys, &low)
		return err == nil && keys > 0 && low == h.firstPort()
	}, 20*time.Second, 20*time.Millisecond, "provisioner did not start")
	// The pass at start treats tenants differently from later passes (it resumes every
	// provisioning one); tests that stage a tenant after start must not race it.
	require.Eventually(h.t, func() bool { return reconcilePasses(reg) > 0 }, 20*time.Second, 20*time.Millisecond,
		"the reconciler's pass at start did not finish")
}

// launch runs a provisioner instance, as one replica of the service, until stop (or the
// test's end); kill stops it without waiting. reg holds its metrics.
func (h *harness) launch(prepare ...func(*provisioner.Service)) (svc *provisioner.Service, reg *prometheus.Registry, kill context.CancelFunc, stop func()) {
	h.t.Helper()
	reg = prometheus.NewRegistry()
	svc, err := provisioner.New(h.cfg, provisioner.Deps{Pool: h.provPool, Outbox: h.ob, NC: h.nc, JS: h.js, Docker: h.cli,
		Logger: h.logger, Registry: reg})
	require.NoError(h.t, err)
	for _, p := range prepare {
		p(svc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	// The test's egress rules leave the host's firewall with it.
	if d, ok := svc.Runtime().(*runtime.Docker); ok {
		h.t.Cleanup(func() { _ = d.Egress().Remove() })
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(h.t, err)
			case <-time.After(60 * time.Second):
				h.t.Errorf("provisioner did not stop within 60s")
			}
		})
	}
	h.t.Cleanup(stop)
	return svc, reg, cancel, stop
}

// admitOnly runs a provisioner that admits tenants but runs none (ServeQueries), for a test
// that wants a tenant's spawn to wait in the stream; the returned function stops it.
func (h *harness) admitOnly() (stop func()) {
	h.t.Helper()
	svc, err := provisioner.New(h.cfg, provisioner.Deps{Pool: h.provPool, Outbox: h.ob, NC: h.nc, JS: h.js, Docker: h.cli,
		Logger: h.logger, Registry: prometheus.NewRegistry()})
	require.NoError(h.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.ServeQueries(ctx) }()
	require.Eventually(h.t, func() bool {
		code, _ := h.do(http.MethodGet, "/api/v1/tenant", nil)
		return code == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "the provisioner answers")
	return func() {
		cancel()
		require.NoError(h.t, <-done)
	}
}

// reconcilePasses counts the reconcile passes a provisioner has finished, from its metrics.
func reconcilePasses(reg *prometheus.Registry) uint64 {
	return firstSeries(reg, "convergence_provisioner_reconcile_duration_seconds").GetHistogram().GetSampleCount()
}

// leading reports whether a provisioner leads its replicas, from its metrics.
func leading(reg *prometheus.Registry) bool {
	return firstSeries(reg, "convergence_leader").GetGauge().GetValue() == 1
}

// firstSeries returns the first series of metric name in reg, nil (whose getters read zero)
// when there is none.
func firstSeries(reg *prometheus.Registry, name string) *dto.Metric {
	families, err := reg.Gather()
	if err != nil {
		return nil
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0]
		}
	}
	return nil
}

// stop stops the current provisioner instance and waits until it has.
func (h *harness) stop() { h.stopFn() }

// do sends a request with the admin token (or token, when given) and decodes the JSON answer.
func (h *harness) do(method, path string, body any, token ...string) (int, map[string]any) {
	h.t.Helper()
	code, out, err := h.try(method, path, body, token...)
	require.NoError(h.t, err)
	return code, out
}

// try is do for goroutines other than the test's: it returns what went wrong instead of
// failing the test.
func (h *harness) try(method, path string, body any, token ...string) (int, map[string]any, error) {
	a, err := h.send(method, path, body, token...)
	if err != nil {
		return 0, nil, err
	}
	var out map[string]any
	if len(a.body) > 0 {
		if err := json.Unmarshal(a.body, &out); err != nil {
			return 0, nil, fmt.Errorf("decode %s: %w", a.body, err)
		}
	}
	return a.code, out, nil
}

// answer is an HTTP answer read whole.
type answer struct {
	code   int
	header http.Header
	body   []byte
}

// raw sends a request and returns the answer with its whole body.
func (h *harness) raw(method, path string, body any, token ...string) answer {
	h.t.Helper()
	a, err := h.send(method, path, body, token...)
	require.NoError(h.t, err)
	return a
}

func (h *harness) send(method, path string, body any, token ...string) (answer, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{}, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(h.t.Context(), method, h.url+path, r)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	tok := adminToken
	if len(token) > 0 {
		tok = token[0]
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, header: resp.Header, body: b}, err
}

// spawn spawns a tenant synchronously and requires it to run; it returns the tenant object.
func (h *harness) spawn(name string) map[string]any {
	h.t.Helper()
	code, body := h.do(http.MethodPost, "/api/v1/tenant/spawn", map[string]any{"name": name})
	require.Equal(h.t, http.StatusCreated, code, "spawn %s: %v", name, body)
	tenant := body["tenant"].(map[string]any)
	require.Equal(h.t, "running", tenant["status"])
	return tenant
}

// envIDOf reads a tenant object's envId.
func envIDOf(tenant map[string]any) int64 { return int64(tenant["envId"].(float64)) }

// tenantPath is the API path of a tenant.
func tenantPath(envID int64, rest string) string {
	return "/api/v1/tenant/" + strconv.FormatInt(envID, 10) + rest
}

// status answers the tenant's status object.
func (h *harness) status(envID int64) map[string]any {
	h.t.Helper()
	code, body := h.do(http.MethodGet, tenantPath(envID, "/status"), nil)
	require.Equal(h.t, http.StatusOK, code, "%v", body)
	return body["tenant"].(map[string]any)
}

// waitStatus waits until the tenant's recorded status is want.
func (h *harness) waitStatus(envID int64, want string, within time.Duration) map[string]any {
	h.t.Helper()
	var last map[string]any
	require.Eventually(h.t, func() bool {
		code, body := h.do(http.MethodGet, tenantPath(envID, "/status"), nil)
		if code != http.StatusOK {
			return false
		}
		last = body["tenant"].(map[string]any)
		return last["status"] == want
	}, within, 50*time.Millisecond, "tenant %d never became %s; last: %v", envID, want, last)
	return last
}

// volumes lists the names of the test's volumes for one tenant.
func (h *harness) volumes(envID int64) []string {
	h.t.Helper()
	f := filters.NewArgs(filters.Arg("label", runtime.LabelEnvID+"="+strconv.FormatInt(envID, 10)))
	for k, v := range h.run.Labels {
		f.Add("label", k+"="+v)
	}
	list, err := h.cli.VolumeList(context.Background(), volume.ListOptions{Filters: f})
	require.NoError(h.t, err)
	var names []string
	for _, v := range list.Volumes {
		names = append(names, v.Name)
	}
	return names
}

// objects lists the test's containers and networks for one tenant (envID 0: all of them).
func (h *harness) objects(envID int64) (containers []container.Summary, networks []network.Summary) {
	h.t.Helper()
	f := filters.NewArgs()
	for k, v := range h.run.Labels {
		f.Add("label", k+"="+v)
	}
	if envID != 0 {
		f.Add("label", runtime.LabelEnvID+"="+strconv.FormatInt(envID, 10))
	}
	containers, err := h.cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: f})
	require.NoError(h.t, err)
	networks, err = h.cli.NetworkList(context.Background(), network.ListOptions{Filters: f})
	require.NoError(h.t, err)
	return containers, networks
}

// inspect inspects the tenant's container.
func (h *harness) inspect(envID int64) container.InspectResponse {
	h.t.Helper()
	c, err := h.cli.ContainerInspect(h.t.Context(), h.svc.Runtime().ContainerName(envID))
	require.NoError(h.t, err)
	return c
}

// removeAndAwaitRecreated removes envID's container behind the platform's back, then waits up
// to within for a new one to run (why says what failed otherwise) and to answer on port.
func (h *harness) removeAndAwaitRecreated(envID int64, port int, within time.Duration, why string) {
	h.t.Helper()
	t := h.t
	old := h.inspect(envID)
	require.NoError(t, h.cli.ContainerRemove(t.Context(), old.ID, container.RemoveOptions{Force: true}))
	require.Eventually(t, func() bool {
		c, err := h.cli.ContainerInspect(t.Context(), h.svc.Runtime().ContainerName(envID))
		return err == nil && c.ID != old.ID && c.State.Running
	}, within, 50*time.Millisecond, why)
	require.Eventually(t, func() bool { return answers(t, port) }, 20*time.Second, 50*time.Millisecond)
}

// leasedPort reads the port leased to the tenant in the pool, or 0.
func (h *harness) leasedPort(envID int64) int {
	h.t.Helper()
	var port int
	err := h.pool.QueryRow(h.t.Context(), `SELECT coalesce((SELECT port FROM tenant_ports WHERE env_id = $1), 0)`, envID).Scan(&port)
	require.NoError(h.t, err)
	return port
}

// get fetches a URL from the host.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// answers reports whether GET /health on port answers 200 now.
func answers(t testing.TB, port int) bool {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, healthURL(port), nil)
	require.NoError(t, err)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func healthURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) + "/health" }
