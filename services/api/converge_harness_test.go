package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/seal"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/api"
	"github.com/convergence-dev/convergence/services/converger"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
	"github.com/convergence-dev/convergence/services/converger/tasks"
	"github.com/convergence-dev/convergence/services/metering"
)

// convergeEnv is the platform's convergence path in one process, on a fresh database and
// JetStream server: the API served over HTTP, the outbox relay, and a converger whose
// simulated provider answers after latency.
type convergeEnv struct {
	t   testing.TB
	URL string
	// Pool sees every service's tables, for fixtures and checks.
	Pool     *pgxpool.Pool
	JS       jetstream.JetStream
	db       *pgtest.DB
	nats     *natstest.Server
	apiPool  *pgxpool.Pool        // the API's role
	ob       *outbox.Outbox       // the API's outbox
	convPool *pgxpool.Pool        // the converger's role
	api      *api.Service         // the first API replica
	apiReg   *prometheus.Registry // its metrics
	secrets  *seal.Keyring        // every converger's, which seals the webhook secrets
	provider *countingProvider
}

func testLogger() *slog.Logger {
	if os.Getenv("CONVERGENCE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newConvergeEnv(t testing.TB, latency time.Duration) *convergeEnv {
	t.Helper()
	return newConvergeEnvWith(t, latency, metering.Config{})
}

// newConvergeEnvWith is newConvergeEnv with its metering configured by mcfg (its prices).
func newConvergeEnvWith(t testing.TB, latency time.Duration, mcfg metering.Config) *convergeEnv {
	t.Helper()
	c := newAPIEnvWith(t, latency, mcfg)
	c.goRun(c.converger(t).Run)
	return c
}

// converger wires a converger on the environment's database (as the converger's role, with its
// own outbox relayed) and JetStream; it starts nothing.
func (c *convergeEnv) converger(t testing.TB) *converger.Service {
	t.Helper()
	return c.convergerWith(t, 0)
}

// convergerWith is converger running at most concurrency tasks at once (0: the default).
func (c *convergeEnv) convergerWith(t testing.TB, concurrency int) *converger.Service {
	t.Helper()
	nc := c.nats.ConnectAs(natsauth.Converger)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	cfg := converger.Config{
		Retry:       llm.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
		AckWait:     5 * time.Second,
		MaxDeliver:  4,
		Concurrency: concurrency,
	}
	cfg.Webhook.AllowPrivateTargets = true
	ob := outbox.New(c.convPool)
	c.goRun(outbox.NewRelay(ob, js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}, testLogger(), prometheus.NewRegistry()).Run)
	conv, err := converger.New(cfg, converger.Deps{Secrets: c.secrets,
		Pool: c.convPool, Outbox: ob, NC: nc, JS: js, Logger: testLogger(), Registry: prometheus.NewRegistry(), Provider: c.provider,
	})
	require.NoError(t, err)
	return conv
}

// newAPIEnv is newConvergeEnv without the converger: tests play it themselves.
func newAPIEnv(t testing.TB, latency time.Duration) *convergeEnv {
	t.Helper()
	return newAPIEnvWith(t, latency, metering.Config{})
}

// newAPIEnvWith is newAPIEnv with its metering configured by mcfg.
func newAPIEnvWith(t testing.TB, latency time.Duration, mcfg metering.Config) *convergeEnv {
	t.Helper()
	db := pgtest.NewDB(t)
	pool := db.For(t, pgrole.API)
	srv := natstest.Start(t)
	js := srv.JetStream()
	ob := outbox.New(pool)
	c := &convergeEnv{
		t:        t,
		Pool:     db.Pool,
		JS:       js,
		db:       db,
		nats:     srv,
		apiPool:  pool,
		ob:       ob,
		convPool: db.For(t, pgrole.Converger),
		secrets:  seal.Generate(),
		provider: &countingProvider{next: simulated.New(simulated.Config{Latency: latency})},
	}
	c.URL = c.serveAPI()

	relay := outbox.NewRelay(ob, srv.JetStreamAs(natsauth.API), outbox.RelayConfig{PollInterval: 50 * time.Millisecond}, testLogger(), prometheus.NewRegistry())
	c.goRun(relay.Run)
	c.goRun(c.metering(t, mcfg).Run)
	nc := srv.Connect()
	require.Eventually(t, func() bool {
		_, err := natsrpc.Call[events.PriceQuery, events.ModelPrice](t.Context(), nc, events.SubjectPriceLookup, events.PriceQuery{Provider: "simulated"})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the metering answers")
	return c
}

// metering wires a metering on the environment's database and JetStream, which records the
// tasks' usage and answers the API's questions about prices; it starts nothing.
func (c *convergeEnv) metering(t testing.TB, cfg metering.Config) *metering.Service {
	t.Helper()
	nc := c.nats.ConnectAs(natsauth.Metering)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	svc, err := metering.New(cfg, metering.Deps{Pool: c.db.For(t, pgrole.Metering), NC: nc, JS: js,
		Logger: testLogger(), Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	return svc
}

// serveAPI serves another replica of the API on the environment's database and JetStream
// server, and returns its URL.
func (c *convergeEnv) serveAPI() string {
	c.t.Helper()
	return c.serveAPIWith(api.ConvergeConfig{})
}

// serveAPIWith is serveAPI with the convergence endpoints configured by cfg.
func (c *convergeEnv) serveAPIWith(cfg api.ConvergeConfig) string {
	c.t.Helper()
	nc := c.nats.ConnectAs(natsauth.API)
	js, err := jetstream.New(nc)
	require.NoError(c.t, err)
	e := httpx.NewEcho(testLogger())
	// The baseline of the API benchmark: a handler on the same server and middleware that
	// decodes the body and runs the engine on the same provider in process, persisting nothing.
	eng, err := engine.New(engine.Config{}, c.provider, testLogger())
	require.NoError(c.t, err)
	e.POST("/bench/bare", func(ec echo.Context) error {
		var body struct {
			Prompt string `json:"prompt"`
			Type   string `json:"type"`
		}
		if err := ec.Bind(&body); err != nil {
			return err
		}
		res, err := eng.Run(ec.Request().Context(), engine.Task{ID: "bench", Prompt: body.Prompt, Type: engine.TaskType(body.Type)}, engine.Options{})
		if err != nil {
			return err
		}
		return ec.JSON(http.StatusOK, map[string]any{"success": true, "result": tasks.ResultOf(res, "")})
	})
	reg := prometheus.NewRegistry()
	svc, err := api.New(api.Config{AdminToken: adminToken, MaxBodyBytes: 1 << 20, Converge: cfg}, api.Deps{
		Pool: c.apiPool, Outbox: c.ob, NC: nc, JS: js, Echo: e, Logger: testLogger(), Registry: reg,
	})
	require.NoError(c.t, err)
	c.goRun(svc.Run) // Its consumers: the keys issued, the tasks ended.
	if c.api == nil {
		c.api, c.apiReg = svc, reg
	}
	hs := httptest.NewServer(e)
	c.t.Cleanup(hs.Close)
	return hs.URL
}

// serveAPIWithShutdown serves another API replica with the platform's own server
// (httpx.Serve, which drains streams and waits on shutdown) and returns its URL and the
// function that shuts it down and returns Serve's result.
func (c *convergeEnv) serveAPIWithShutdown() (string, func() error) {
	c.t.Helper()
	nc := c.nats.ConnectAs(natsauth.API)
	js, err := jetstream.New(nc)
	require.NoError(c.t, err)
	e := httpx.NewEcho(testLogger())
	_, err = api.New(api.Config{AdminToken: adminToken, MaxBodyBytes: 1 << 20}, api.Deps{
		Pool: c.apiPool, Outbox: c.ob, NC: nc, JS: js, Echo: e, Logger: testLogger(), Registry: prometheus.NewRegistry(),
	})
	require.NoError(c.t, err)
	ln, err := httpx.Listen(context.Background(), "127.0.0.1:0")
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpx.Serve(ctx, e, ln) }()
	var once sync.Once
	var result error
	shutdown := func() error {
		once.Do(func() {
			cancel()
			result = <-done
		})
		return result
	}
	c.t.Cleanup(func() { _ = shutdown() })
	return "http://" + ln.Addr().String(), shutdown
}

// goRun runs fn until the test ends, then cancels it and waits for it to return nil.
func (c *convergeEnv) goRun(fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	c.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(c.t, err)
		case <-time.After(30 * time.Second):
			c.t.Error("did not stop within 30s")
		}
	})
}

// insertTenant records a running tenant and returns its ID and API key.
func (c *convergeEnv) insertTenant(name, status string) (int64, string) {
	c.t.Helper()
	key, digest := apikey.New()
	var id int64
	require.NoError(c.t, c.Pool.QueryRow(context.Background(), `
		WITH e AS (INSERT INTO environments (org_id, name, status, api_key_hash, api_key_prefix)
			VALUES (1, $1, $2, $3, $4) RETURNING id, org_id)
		INSERT INTO tenant_keys (digest, env_id, org_id, name, prefix, revoked_at, revoked_reason)
		SELECT $3, id, org_id, $1, $4, CASE WHEN $2 = 'destroyed' THEN now() END, CASE WHEN $2 = 'destroyed' THEN 'destroyed' END
		FROM e RETURNING env_id`,
		name, status, digest, apikey.Display(key)).Scan(&id))
	return id, key
}

// unlimited lifts a tenant's creation rate limit, for tests that create many tasks.
func (c *convergeEnv) unlimited(envID int64) {
	c.t.Helper()
	_, err := c.Pool.Exec(context.Background(), `
		INSERT INTO api_rate_limits (env_id, class, per_minute, burst) VALUES ($1, 'converge.create', 60000, 10000)`, envID)
	require.NoError(c.t, err)
}

// countingProvider counts the calls that reach the provider it wraps.
type countingProvider struct {
	next  llm.Provider
	calls atomic.Int64
}

func (p *countingProvider) Name() string { return p.next.Name() }

func (p *countingProvider) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	p.calls.Add(1)
	return p.next.Complete(ctx, req)
}

// answer is a decoded API answer.
type answer struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

// taskAnswer decodes the body of an answer about a task.
type taskAnswer struct {
	Success bool          `json:"success"`
	TaskID  string        `json:"taskId"`
	Task    contract.Task `json:"task"`
}

func (a answer) task(t testing.TB) contract.Task {
	t.Helper()
	var ta taskAnswer
	require.NoError(t, json.Unmarshal(a.Raw, &ta), "body: %s", a.Raw)
	require.True(t, ta.Success)
	require.Equal(t, ta.TaskID, ta.Task.TaskID)
	return ta.Task
}

// call sends a request to the API at base with a bearer key ("" for none) and extra headers,
// and fails the test if it gets no answer. body is JSON-encoded unless it is a string, sent as
// is. From a goroutine other than the test's, use tryCall.
func call(t testing.TB, base, method, path, key string, body any, header map[string]string) answer {
	t.Helper()
	a, err := tryCall(base, method, path, key, body, header)
	require.NoError(t, err)
	return a
}

// tryCall is call that returns what went wrong instead of failing the test.
func tryCall(base, method, path, key string, body any, header map[string]string) (answer, error) {
	return send(http.DefaultClient, base, method, path, key, body, header)
}

// benchClient sends the benchmarks' calls. Its transport is its own, so openapi.Checked does
// not check its calls against the document (which costs more CPU than the API spends on a
// request), and it keeps a connection for each of the benchmarks' callers.
var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// benchCall POSTs body to the API at base through benchClient; it is safe from any goroutine.
func benchCall(base, path, key string, body any) (answer, error) {
	return send(benchClient, base, http.MethodPost, path, key, body, nil)
}

// send makes a call of tryCall with client.
func send(client *http.Client, base, method, path, key string, body any, header map[string]string) (answer, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return answer{}, err
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, base+path, r)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	a := answer{Status: resp.StatusCode, Header: resp.Header}
	if a.Raw, err = io.ReadAll(resp.Body); err != nil {
		return a, err
	}
	if resp.Header.Get("X-Request-ID") == "" {
		return a, errors.New("the answer carries no X-Request-ID")
	}
	if len(a.Raw) > 0 {
		if err := json.Unmarshal(a.Raw, &a.Body); err != nil {
			return a, fmt.Errorf("body %s: %w", a.Raw, err)
		}
	}
	return a, nil
}

func (c *convergeEnv) call(t testing.TB, method, path, key string, body any) answer {
	t.Helper()
	return call(t, c.URL, method, path, key, body, nil)
}

// waitTask polls the task until done says it is what the test waits for.
func (c *convergeEnv) waitTask(t testing.TB, key, id string, done func(contract.Task) bool) contract.Task {
	t.Helper()
	var v contract.Task
	require.Eventually(t, func() bool {
		a := c.call(t, http.MethodGet, "/api/v1/converge/"+id, key, nil)
		require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
		v = a.task(t)
		return done(v)
	}, 20*time.Second, 10*time.Millisecond)
	return v
}

func finished(v contract.Task) bool { return v.Status.Finished() }

// sse is a Server-Sent Event.
type sse struct {
	Event, ID string
	Data      []byte
}

// openEvents opens a task's progress stream; the events arrive on the returned channel, which
// is closed when the stream ends. The stream is closed when the test ends.
func (c *convergeEnv) openEvents(t testing.TB, key, id string, header map[string]string) <-chan sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/api/v1/converge/"+id+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	out := make(chan sse, 64)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		var ev sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Event != "" {
					out <- ev
				}
				ev = sse{}
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data = append(ev.Data, strings.TrimPrefix(line, "data: ")...)
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return out
}

// collect reads events until the stream ends.
func collect(t testing.TB, ch <-chan sse, within time.Duration) []sse {
	t.Helper()
	var got []sse
	timeout := time.After(within)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-timeout:
			t.Fatalf("stream did not end within %s; got %d events", within, len(got))
		}
	}
}

// resultEventsByTask counts the converge.completed and converge.failed events per task.
func (c *convergeEnv) resultEventsByTask(t testing.TB) map[string][]events.Envelope {
	t.Helper()
	ctx := context.Background()
	s, err := c.JS.Stream(ctx, events.StreamConvergeResults)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	out := map[string][]events.Envelope{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		env, err := events.Decode(m.Data)
		require.NoError(t, err)
		out[env.Subject] = append(out[env.Subject], env)
	}
	return out
}

// requireScoreConsistent checks that a result's score is the rounded sum of its breakdown's
// points, each its weight times its value, and the last round's score.
func requireScoreConsistent(t testing.TB, v contract.Task) {
	t.Helper()
	r := v.Result
	var points, weights float64
	for _, c := range r.ScoreBreakdown.Components() {
		require.InDelta(t, c.Weight*c.Value, c.Points, 0.005+1e-9)
		points += c.Points
		weights += c.Weight
	}
	require.InDelta(t, 1.0, weights, 1e-9)
	require.InDelta(t, float64(r.ConvergenceScore), points, 0.5+1e-9)
	require.Len(t, v.Rounds, r.Rounds)
	if r.Rounds > 0 {
		last := v.Rounds[len(v.Rounds)-1]
		require.Equal(t, r.ConvergenceScore, last.Score.Value)
		require.Equal(t, r.ScoreBreakdown, last.Score.Breakdown)
	}
	var sum contract.Usage
	for _, a := range r.Agents {
		sum = sum.Add(a.Usage())
	}
	require.Equal(t, r.Usage, sum)
	require.Equal(t, r.Usage, v.Usage)
}
