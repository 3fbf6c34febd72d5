package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/api"
	"github.com/convergence-dev/convergence/services/api/openapi"
	"github.com/convergence-dev/convergence/services/converger"
	"github.com/convergence-dev/convergence/services/metering"
	"github.com/convergence-dev/convergence/services/provisioner"
	"github.com/convergence-dev/convergence/services/provisioner/keyring"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

func TestMain(m *testing.M) {
	// Every call a test makes is checked against the API's OpenAPI document.
	goleak.VerifyTestMain(openapi.Checked(pgtest.Wrap(m)))
}

const adminToken = "test-admin-token-0123456789"

// testAPI is the API served over HTTP on a fresh database and JetStream server.
type testAPI struct {
	t    *testing.T
	URL  string
	Pool *pgxpool.Pool
	NC   *nats.Conn
	JS   jetstream.JetStream
	db   *pgtest.DB
	nats *natstest.Server
	svc  *api.Service
}

func newTestAPI(t *testing.T) *testAPI {
	t.Helper()
	return newTestAPIWith(t, api.Config{})
}

// newTestAPIWith is newTestAPI with cfg's plans.
func newTestAPIWith(t *testing.T, plans api.Config) *testAPI {
	t.Helper()
	db := pgtest.NewDB(t)
	pool := db.For(t, pgrole.API)
	srv := natstest.Start(t)
	nc := srv.Connect()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	logger := testLogger()
	e := httpx.NewEcho(logger)
	cfg := api.Config{AdminToken: adminToken, MaxBodyBytes: 1 << 20, Plans: plans.Plans, PlansReload: plans.PlansReload}
	apiNC := srv.ConnectAs(natsauth.API)
	apiJS, err := jetstream.New(apiNC)
	require.NoError(t, err)
	svc, err := api.New(cfg, api.Deps{Pool: pool, Outbox: outbox.New(pool), NC: apiNC, JS: apiJS, Echo: e, Logger: logger, Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	runUntilEnd(t, svc.Run)
	hs := httptest.NewServer(e)
	t.Cleanup(hs.Close)
	return &testAPI{t: t, URL: hs.URL, Pool: db.Pool, NC: nc, JS: js, db: db, nats: srv, svc: svc}
}

// runUntilEnd runs run until the test ends, then stops it and requires a clean stop.
func runUntilEnd(t testing.TB, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// startProvisioner runs a provisioner that admits tenants and answers for them on the bus but
// runs none (ServeQueries: no container is made), until the test ends, and returns its sealing
// key.
func (a *testAPI) startProvisioner() *keyring.Keyring {
	a.t.Helper()
	cli := dockertest.Client(a.t)
	run := dockertest.NewRun(a.t, cli)
	cfg := provisioner.Config{
		Runtime:  runtime.DockerConfig{NamePrefix: run.Prefix, Labels: run.Labels},
		StateDir: a.t.TempDir(),
		Ports:    "3001-3999", // never bound: no tenant runs
	}
	nc := a.nats.ConnectAs(natsauth.Provisioner)
	js, err := jetstream.New(nc)
	require.NoError(a.t, err)
	pool := a.db.For(a.t, pgrole.Provisioner)
	ob := outbox.New(pool)
	runUntilEnd(a.t, outbox.NewRelay(ob, js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}, testLogger(), prometheus.NewRegistry()).Run)
	svc, err := provisioner.New(cfg, provisioner.Deps{Pool: pool, Outbox: ob,
		NC: nc, JS: js, Docker: cli, Logger: testLogger(), Registry: prometheus.NewRegistry()})
	require.NoError(a.t, err)
	runUntilEnd(a.t, svc.ServeQueries)
	require.Eventually(a.t, func() bool {
		_, err := natsrpc.Call[events.TenantQuery, events.TenantView](a.t.Context(), a.NC, events.SubjectTenantGet, events.TenantQuery{EnvID: 1})
		return !errors.Is(err, natsrpc.ErrUnavailable)
	}, 20*time.Second, 20*time.Millisecond, "the provisioner answers")
	keys, err := keyring.LoadOrCreate(filepath.Join(cfg.StateDir, "provisioner.key"))
	require.NoError(a.t, err)
	return keys
}

// startConverger runs a converger that answers for tasks on the bus but runs none
// (ServeQueries), until the test ends.
func (a *testAPI) startConverger() {
	a.t.Helper()
	nc := a.nats.ConnectAs(natsauth.Converger)
	js, err := jetstream.New(nc)
	require.NoError(a.t, err)
	pool := a.db.For(a.t, pgrole.Converger)
	svc, err := converger.New(converger.Config{Provider: converger.ProviderSimulated}, converger.Deps{Pool: pool, Outbox: outbox.New(pool), Secrets: seal.Generate(),
		NC: nc, JS: js, Logger: testLogger(), Registry: prometheus.NewRegistry()})
	require.NoError(a.t, err)
	runUntilEnd(a.t, svc.ServeQueries)
	require.Eventually(a.t, func() bool {
		_, err := natsrpc.Call[events.KnownTasksQuery, events.KnownTasks](a.t.Context(), a.NC, events.SubjectTasksKnown, events.KnownTasksQuery{})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the converger answers")
}

// startMetering runs a metering on the API's database and JetStream until the test ends, to
// answer the usage questions the API asks it.
func (a *testAPI) startMetering() {
	a.t.Helper()
	a.startMeteringWith(metering.Config{})
}

// startMeteringWith is startMetering configured by cfg.
func (a *testAPI) startMeteringWith(cfg metering.Config) {
	a.t.Helper()
	nc := a.nats.ConnectAs(natsauth.Metering)
	js, err := jetstream.New(nc)
	require.NoError(a.t, err)
	svc, err := metering.New(cfg, metering.Deps{Pool: a.db.For(a.t, pgrole.Metering), NC: nc, JS: js,
		Logger: testLogger(), Registry: prometheus.NewRegistry()})
	require.NoError(a.t, err)
	runUntilEnd(a.t, svc.Run)
	require.Eventually(a.t, func() bool {
		_, err := natsrpc.Call[events.UnpricedQuery, events.UnpricedModels](a.t.Context(), a.NC, events.SubjectUsageUnpriced, events.UnpricedQuery{})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the metering answers")
}

// insertTenant records a running tenant of the default organization directly in the database
// and returns its ID and key.
func (a *testAPI) insertTenant(name, status string) (int64, string) {
	a.t.Helper()
	return a.insertTenantOf(1, name, status)
}

// insertTenantOf is insertTenant in organization orgID.
func (a *testAPI) insertTenantOf(orgID int64, name, status string) (int64, string) {
	a.t.Helper()
	key, digest := apikey.New()
	var id int64
	err := a.Pool.QueryRow(a.t.Context(), `
		WITH e AS (INSERT INTO environments (org_id, name, status, api_key_hash, api_key_prefix)
			VALUES ($5, $1, $2, $3, $4) RETURNING id, org_id)
		INSERT INTO tenant_keys (digest, env_id, org_id, name, prefix, revoked_at, revoked_reason)
		SELECT $3, id, org_id, $1, $4, CASE WHEN $2 = 'destroyed' THEN now() END, CASE WHEN $2 = 'destroyed' THEN 'destroyed' END
		FROM e RETURNING env_id`,
		name, status, digest, apikey.Display(key), orgID).Scan(&id)
	require.NoError(a.t, err)
	return id, key
}

// do sends a request with a bearer token ("" for none) and decodes the JSON answer.
func (a *testAPI) do(method, path, token string, body any) (int, map[string]any) {
	a.t.Helper()
	var raw string
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(a.t, err)
		raw = string(b)
	}
	return a.doRaw(method, path, token, raw)
}

// doRaw is do with the body as it is sent ("" for none).
func (a *testAPI) doRaw(method, path, token, body string) (int, map[string]any) {
	a.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(a.t.Context(), method, a.URL+path, r)
	require.NoError(a.t, err)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	require.NotEmpty(a.t, resp.Header.Get("X-Request-ID"), "every answer carries a request ID")
	var out map[string]any
	raw, err := io.ReadAll(resp.Body)
	require.NoError(a.t, err)
	if len(raw) > 0 {
		require.NoError(a.t, json.Unmarshal(raw, &out), "body: %s", raw)
	}
	return resp.StatusCode, out
}

// errorCode returns the code of an error answer.
func errorCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}
