package metering_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger"
	"github.com/convergence-dev/convergence/services/metering"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

var discard = slog.New(slog.DiscardHandler)

// platform is a fresh database and JetStream server for one test.
type platform struct {
	t testing.TB
	// Pool sees every service's tables, for fixtures and checks; the replicas connect as
	// the metering's role.
	Pool *pgxpool.Pool
	db   *pgtest.DB
	NATS *natstest.Server
	JS   jetstream.JetStream
	// Records is a metering connection to ask the converger for its task records on, which
	// a converger of the platform answers, as metering does before it bills a result.
	Records *nats.Conn
}

func newPlatform(t testing.TB) *platform {
	t.Helper()
	srv := natstest.Start(t)
	db := pgtest.NewDB(t)
	p := &platform{t: t, Pool: db.Pool, db: db, NATS: srv, JS: srv.JetStream()}
	p.Records = p.serveConvergerRecords()
	return p
}

// instance is one running metering replica with its own NATS connection and metrics.
type instance struct {
	Service  *metering.Service
	Registry *prometheus.Registry
	NC       *nats.Conn
	ctx      context.Context // done when the replica is stopped
	cancel   context.CancelFunc
	done     chan error
}

// testConfig delivers again quickly, so redelivery tests take a second, not thirty.
func testConfig() metering.Config {
	return metering.Config{BatchSize: 50, IdleWait: 200 * time.Millisecond, AckWait: time.Second, MaxDeliver: 5}
}

// commitHook is called after each commit of in, before the acknowledgements; false skips
// them (see metering.SetAfterCommit).
type commitHook func(in *instance, source string, ids []string, deliveries []uint64) bool

// start runs a metering replica until the test ends or Stop is called.
func (p *platform) start(cfg metering.Config, hook commitHook) *instance {
	p.t.Helper()
	nc := p.NATS.ConnectAs(natsauth.Metering)
	js, err := jetstream.New(nc)
	require.NoError(p.t, err)
	reg := prometheus.NewRegistry()
	svc, err := metering.New(cfg, metering.Deps{Pool: p.db.For(p.t, pgrole.Metering), NC: nc, JS: js, Logger: discard, Registry: reg})
	require.NoError(p.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{Service: svc, Registry: reg, NC: nc, ctx: ctx, cancel: cancel, done: make(chan error, 1)}
	if hook != nil {
		metering.SetAfterCommit(svc, func(source string, ids []string, deliveries []uint64) bool {
			return hook(in, source, ids, deliveries)
		})
	}
	go func() { in.done <- svc.Run(ctx) }()
	p.t.Cleanup(func() { in.Stop(p.t) })
	return in
}

// Stop stops the replica and checks it stopped cleanly. It is safe to call twice.
func (in *instance) Stop(t testing.TB) {
	t.Helper()
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("metering did not stop")
	}
}

// metric returns the value of the counter or gauge name with the given label values, 0 when
// it has not been set.
func (in *instance) metric(name string, labels ...string) float64 {
	families, err := in.Registry.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// events counts the replica's handled events of a source and outcome.
func (in *instance) events(source, outcome string) int {
	return int(in.metric("convergence_metering_events_total", "source", source, "outcome", outcome))
}

// publish publishes env on subject with msgID as its Nats-Msg-Id (env.ID when empty), and
// reports whether JetStream took it as a duplicate. A convergence result's task is first
// recorded in the converger's table as the converger would have recorded it (recordTask), so
// that metering finds its record.
func (p *platform) publish(subject string, env events.Envelope, msgID string) bool {
	p.t.Helper()
	if subject == events.SubjectConvergeCompleted || subject == events.SubjectConvergeFailed {
		p.recordTask(env)
	}
	data, err := json.Marshal(env)
	require.NoError(p.t, err)
	return p.publishRaw(subject, data, cmpOr(msgID, env.ID))
}

// recordTask records the task of a result event in the converger's table, finished with the
// event's tenant, status and usage, unless it is there already. An event that is not a result
// records nothing: it is there to be refused by its decoding.
func (p *platform) recordTask(env events.Envelope) {
	p.t.Helper()
	status := "completed"
	r, err := events.DataAs[events.ConvergeCompleted](env)
	if env.Type == events.TypeConvergeFailed {
		status = "failed"
		var f events.ConvergeFailed
		f, err = events.DataAs[events.ConvergeFailed](env)
		r = events.ConvergeCompleted{TaskID: f.TaskID, EnvID: f.EnvID, OrgID: f.OrgID, Usage: f.Usage, FinishedAt: f.FinishedAt}
	}
	if err != nil || r.TaskID == "" || strings.ContainsRune(r.TaskID, 0) {
		return // not one PostgreSQL can hold, nor metering decode
	}
	p.insertTask(r.TaskID, r.EnvID, r.OrgID, status, r.Usage)
}

// insertTask records a task in the converger's table, unless it is there already.
func (p *platform) insertTask(id string, envID, orgID int64, status string, u events.Usage) {
	p.t.Helper()
	_, err := p.Pool.Exec(context.Background(), `
		INSERT INTO converger.convergence_tasks (id, env_id, org_id, type, status, request, input_tokens, output_tokens,
			cached_tokens, total_tokens, finished_at)
		VALUES ($1, $2, $3, 'design', $4, '{}', $5, $6, $7, $8, CASE WHEN $4 IN ('queued', 'running') THEN NULL ELSE now() END)
		ON CONFLICT (id) DO NOTHING`, id, envID, orgID, status, u.InputTokens, u.OutputTokens, u.CachedTokens, u.TotalTokens)
	require.NoError(p.t, err)
}

func (p *platform) publishRaw(subject string, data []byte, msgID string) bool {
	p.t.Helper()
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	ack, err := p.JS.PublishMsg(p.t.Context(), msg)
	require.NoError(p.t, err)
	return ack.Duplicate
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// completed returns a converge.completed event of a task of tenant env in org.
func completed(task string, env, org int64, at time.Time, agents ...events.AgentUsage) events.Envelope {
	var u events.Usage
	var rounds int
	for _, a := range agents {
		u = u.Add(a.Usage)
		rounds++
	}
	e, err := events.NewEnvelope("convergence/converger", events.TypeConvergeCompleted, task, "", events.ConvergeCompleted{
		TaskID: task, EnvID: env, OrgID: org, Type: "design", StopReason: "converged", ConvergenceScore: 87.5,
		Rounds: rounds, Usage: u, Agents: agents, FinishedAt: at,
	})
	if err != nil {
		panic(err)
	}
	return e
}

func lifecycle(env, org int64, state events.TenantState, at time.Time) events.Envelope {
	e, err := events.NewEnvelope("convergence/provisioner", events.TypeTenantLifecycle, "", "", events.TenantLifecycle{
		EnvID: env, OrgID: org, Name: "t", State: state, At: at,
	})
	if err != nil {
		panic(err)
	}
	return e
}

func sonnet(agent string, in, out int64) events.AgentUsage {
	return events.AgentUsage{Agent: agent, Provider: "anthropic", Model: "claude-sonnet-4-20250514", Calls: 1,
		Usage: events.Usage{InputTokens: in, OutputTokens: out, TotalTokens: in + out}}
}

// count runs a query returning one integer. A query of the daily or monthly rollups first
// merges the pending deltas into them, as the metering does every second.
func (p *platform) count(sql string, args ...any) int64 {
	p.t.Helper()
	if strings.Contains(sql, "metering_rollup_daily") || strings.Contains(sql, "metering_rollup_monthly") {
		// A running metering may hold the merge lock; its merge commits before ours can run,
		// so once ours has run, every pending delta is in the rollups.
		require.Eventually(p.t, func() bool {
			_, ran, err := ledger.MergeRollups(context.Background(), p.Pool)
			require.NoError(p.t, err)
			return ran
		}, 10*time.Second, 5*time.Millisecond, "the rollup merge lock was never free")
	}
	var n int64
	require.NoError(p.t, p.Pool.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
	return n
}

// waitCount waits until sql counts want.
func (p *platform) waitCount(want int64, sql string, args ...any) {
	p.t.Helper()
	require.Eventually(p.t, func() bool { return p.count(sql, args...) == want }, 20*time.Second, 20*time.Millisecond,
		"waiting for %q to reach %d (it is %d)", sql, want, p.count(sql, args...))
}

// drained waits until the durable consumer has nothing pending and nothing unacknowledged.
func (p *platform) drained(stream, durable string) {
	p.t.Helper()
	natstest.WaitDrained(p.t, p.JS, stream, durable, 20*time.Second)
}

// serveConvergerRecords runs a converger that answers for its task records on the bus but runs
// no task, until the test ends, and returns a connection to ask it on.
func (p *platform) serveConvergerRecords() *nats.Conn {
	p.t.Helper()
	conv := p.NATS.ConnectAs(natsauth.Converger)
	js, err := jetstream.New(conv)
	require.NoError(p.t, err)
	pool := p.db.For(p.t, pgrole.Converger)
	svc, err := converger.New(converger.Config{Provider: converger.ProviderSimulated}, converger.Deps{Pool: pool, Outbox: outbox.New(pool), Secrets: seal.Generate(),
		NC: conv, JS: js, Logger: discard, Registry: prometheus.NewRegistry()})
	require.NoError(p.t, err)
	nc := p.NATS.ConnectAs(natsauth.Metering)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.ServeQueries(ctx) }()
	p.t.Cleanup(func() {
		cancel()
		require.NoError(p.t, <-done)
	})
	require.Eventually(p.t, func() bool {
		_, err := natsrpc.Call[events.KnownTasksQuery, events.KnownTasks](context.Background(), nc, events.SubjectTasksKnown, events.KnownTasksQuery{})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the converger answers")
	return nc
}
