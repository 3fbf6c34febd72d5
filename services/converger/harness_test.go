package converger_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/tasks"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// logger is silent unless CONVERGENCE_TEST_LOG is set.
func logger() *slog.Logger {
	if os.Getenv("CONVERGENCE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is a fresh database and JetStream server with an outbox relay running: what a converger
// process runs on.
type env struct {
	t  testing.TB
	db *pgtest.DB
	// pool sees every service's tables, for fixtures and checks; convPool is the converger's
	// role, which ob and store use.
	pool     *pgxpool.Pool
	convPool *pgxpool.Pool
	nats     *natstest.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	ob       *outbox.Outbox
	store    *tasks.Store
	// secrets is the keyring of every converger of the env; webhooks its secrets on it.
	secrets  *seal.Keyring
	webhooks *webhook.Secrets
}

func newEnv(t testing.TB) *env {
	t.Helper()
	db := pgtest.NewDB(t)
	pool := db.For(t, pgrole.Converger)
	srv := natstest.Start(t)
	nc := srv.Connect()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	e := &env{t: t, db: db, pool: db.Pool, convPool: pool, nats: srv, nc: nc, js: js, ob: outbox.New(pool)}
	e.secrets = seal.Generate()
	e.webhooks = webhook.NewSecrets(e.secrets)
	e.store = tasks.NewStore(pool, e.webhooks)
	// The tests play the API through the converger's outbox (converge requests), so its relay
	// publishes as admin; the converger's own user relays in the platform and e2e tests.
	relay := outbox.NewRelay(e.ob, js, outbox.RelayConfig{PollInterval: 50 * time.Millisecond}, logger(), prometheus.NewRegistry())
	e.goRun(relay.Run)
	return e
}

// goRun runs fn until the test ends, then cancels it and waits for it to return nil.
func (e *env) goRun(fn func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(e.t, err)
			case <-time.After(30 * time.Second):
				e.t.Error("did not stop within 30s")
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// testConfig is a converger config for tests: quick retries and redeliveries.
func testConfig() converger.Config {
	return converger.Config{
		Provider:   converger.ProviderSimulated,
		Retry:      llm.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, CallTimeout: 10 * time.Second},
		AckWait:    2 * time.Second,
		MaxDeliver: 4,
	}
}

// startConverger runs a converger on its own NATS connection until the test ends or stop is
// called. p, when not nil, replaces the configured provider.
func (e *env) startConverger(cfg converger.Config, p llm.Provider) (stop func()) {
	stop, _ = e.startConvergerConn(cfg, p)
	return stop
}

// startConvergerConn is startConverger that also returns the converger's NATS connection.
func (e *env) startConvergerConn(cfg converger.Config, p llm.Provider) (stop func(), nc *nats.Conn) {
	e.t.Helper()
	nc = e.nats.ConnectAs(natsauth.Converger)
	js, err := jetstream.New(nc)
	require.NoError(e.t, err)
	svc, err := converger.New(cfg, converger.Deps{Secrets: e.secrets,
		Pool: e.convPool, Outbox: e.ob, NC: nc, JS: js, Logger: logger(), Registry: prometheus.NewRegistry(), Provider: p,
	})
	require.NoError(e.t, err)
	return e.goRun(svc.Run), nc
}

// tenant records a tenant and returns its ID.
func (e *env) tenant(name string) int64 {
	e.t.Helper()
	_, digest := apikey.New()
	var id int64
	require.NoError(e.t, e.pool.QueryRow(context.Background(), `
		INSERT INTO environments (org_id, name, status, api_key_hash, api_key_prefix)
		VALUES (1, $1, 'running', $2, 'sk_tenant_test') RETURNING id`, name, digest).Scan(&id))
	return id
}

// submit queues a task of tenant envID as the API does, and returns its ID.
func (e *env) submit(envID int64, req tasks.Request) string {
	e.t.Helper()
	t, err := engine.DefaultLimits().Normalize(req.EngineTask(""))
	require.NoError(e.t, err)
	ev := taskspec.Request(t, req.TokenBudget, req.Timeout(), req.WebhookURL)
	ev.TaskID, ev.EnvID, ev.OrgID = taskspec.NewID(), envID, 1
	e.request(ev, "req-"+ev.TaskID)
	// Recorded as the request's arrival records it, so the test reads it at once.
	require.NoError(e.t, e.store.Accept(context.Background(), ev, "req-"+ev.TaskID))
	return ev.TaskID
}

// request sends a converge.request through the outbox, as the API does.
func (e *env) request(req events.ConvergeRequest, requestID string) {
	e.t.Helper()
	env, err := events.NewEnvelope("convergence/api", events.TypeConvergeRequest, req.TaskID, requestID, req)
	require.NoError(e.t, err)
	require.NoError(e.t, e.ob.Batch(context.Background(), &pgx.Batch{}, events.SubjectConvergeRequest, env))
}

// waitFinished waits for task id to finish and returns its record.
func (e *env) waitFinished(envID int64, id string, within time.Duration) tasks.Record {
	e.t.Helper()
	var rec tasks.Record
	require.Eventually(e.t, func() bool {
		var err error
		rec, err = e.store.Get(context.Background(), envID, id)
		require.NoError(e.t, err)
		return rec.Status.Finished()
	}, within, 10*time.Millisecond, "task %s did not finish", id)
	return rec
}

// resultEvents returns the converge.completed and converge.failed events in the results stream,
// by task ID.
func (e *env) resultEvents() map[string][]events.Envelope {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, events.StreamConvergeResults)
	require.NoError(e.t, err)
	info, err := s.Info(ctx)
	require.NoError(e.t, err)
	out := map[string][]events.Envelope{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(e.t, err)
		env, err := events.Decode(m.Data)
		require.NoError(e.t, err)
		out[env.Subject] = append(out[env.Subject], env)
	}
	return out
}

// waitResultEvent waits for task id's one result event and returns it.
func (e *env) waitResultEvent(id string) events.Envelope {
	e.t.Helper()
	var got []events.Envelope
	require.Eventually(e.t, func() bool {
		got = e.resultEvents()[id]
		return len(got) > 0
	}, 10*time.Second, 20*time.Millisecond, "no result event for %s", id)
	return got[0]
}

// persistedUsage sums the usage of task id's persisted turns.
func (e *env) persistedUsage(id string) events.Usage {
	e.t.Helper()
	var u events.Usage
	require.NoError(e.t, e.pool.QueryRow(context.Background(), `
		SELECT coalesce(sum(input_tokens), 0)::int8, coalesce(sum(output_tokens), 0)::int8, coalesce(sum(cached_tokens), 0)::int8
		FROM convergence_turns WHERE task_id = $1`, id).Scan(&u.InputTokens, &u.OutputTokens, &u.CachedTokens))
	u.TotalTokens = u.InputTokens + u.OutputTokens
	return u
}

// counting counts the calls that reach the provider it wraps; block, when set, holds call
// number n (from 1) until the call's context ends.
type counting struct {
	next  llm.Provider
	calls atomic.Int64
	block func(n int64) bool
}

func (c *counting) Name() string { return c.next.Name() }

func (c *counting) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	n := c.calls.Add(1)
	if c.block != nil && c.block(n) {
		<-ctx.Done()
		return llm.Response{}, ctx.Err()
	}
	return c.next.Complete(ctx, req)
}

// requireAgentsAddUp checks that a result's usage per agent adds up to its total, and that
// the score is what its breakdown says.
func requireAgentsAddUp(t testing.TB, r *api.Result) {
	t.Helper()
	require.NotNil(t, r)
	var sum api.Usage
	for _, a := range r.Agents {
		sum = sum.Add(a.Usage())
		require.Positive(t, a.Calls)
		require.NotEmpty(t, a.Provider)
		require.NotEmpty(t, a.Model)
	}
	require.Equal(t, r.Usage, sum, "agents add up to the task's usage")
	require.Equal(t, r.Usage.InputTokens+r.Usage.OutputTokens, r.Usage.TotalTokens)
	var points float64
	for _, c := range r.ScoreBreakdown.Components() {
		require.InDelta(t, c.Weight*c.Value, c.Points, 0.005+1e-9)
		points += c.Points
	}
	require.InDelta(t, float64(r.ConvergenceScore), points, 0.5+1e-9, "the score is the rounded sum of its breakdown's points")
}

func decodeData[T any](t testing.TB, env events.Envelope) T {
	t.Helper()
	v, err := events.DataAs[T](env)
	require.NoError(t, err)
	return v
}
