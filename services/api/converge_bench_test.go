package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/taskspec"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/services/api"
)

// BenchmarkSyncConverge measures what the platform adds to a convergence. Its converge
// variant is a sync POST /api/v1/converge with a zero-latency simulated provider: HTTP, the
// tenant's key, the rate limit, validation, the API's record and its outbox row, the relay to
// JetStream, the converger's record and claim, seven provider calls with the turns and rounds
// persisted and streamed, the result and its event through the outbox, the waiting request
// woken on core NATS, and the task asked of the converger and answered. Its bare variant, the
// baseline measured in the same run, is a handler on the same HTTP server and middleware that
// decodes the same body and runs the same dual-agent engine on the same provider in process,
// persisting nothing.
//
// The floor variant is the least durable work any sync converge of this design does, with no
// HTTP, engine or provider: the API's commit of the task, the command published to JetStream
// and delivered to its consumer, and the consumer's commit of the result, on the same
// PostgreSQL and JetStream server. The platform's overhead cannot fall below it.
//
// Each variant reports the median latency of a request (p50-ms) and the requests answered per
// second; the converge variant adds its median overhead over the bare one (overhead-p50-ms),
// and the floor's (floor-p50-ms). clients=1 is one caller at a time; clients=16 has sixteen
// at once.
func BenchmarkSyncConverge(b *testing.B) {
	c := newConvergeEnv(b, 0)
	envID, key := c.insertTenant("bench", "running")
	c.unlimited(envID)
	body := map[string]any{"prompt": "Design a rate limiter for a multi-tenant API. [sim:converge]", "type": "design"}
	floor := c.durableFloor(b)
	for _, clients := range []int{1, 16} {
		var bare, least time.Duration
		b.Run(fmt.Sprintf("clients=%d/floor", clients), func(b *testing.B) {
			least = parallel(b, clients, floor)
		})
		b.Run(fmt.Sprintf("clients=%d/bare", clients), func(b *testing.B) {
			bare = parallel(b, clients, func() error {
				return completed(benchCall(c.URL, "/bench/bare", "", body))
			})
		})
		b.Run(fmt.Sprintf("clients=%d/converge", clients), func(b *testing.B) {
			before := c.dbWork(b)
			p50 := parallel(b, clients, func() error {
				return completed(benchCall(c.URL, "/api/v1/converge", key, body))
			})
			after := c.dbWork(b)
			b.ReportMetric(float64(after.xacts-before.xacts)/float64(b.N), "db-xacts/op")
			b.ReportMetric(float64(after.rows-before.rows)/float64(b.N), "db-rows-written/op")
			if bare > 0 {
				b.ReportMetric(ms(p50-bare), "overhead-p50-ms")
				b.ReportMetric(float64(p50)/float64(bare), "x-bare")
			}
			if least > 0 {
				b.ReportMetric(ms(least), "floor-p50-ms")
			}
		})
	}
}

// completed returns an error unless a is a 200 answer (with a completed task, when it
// carries one).
func completed(a answer, err error) error {
	if err != nil {
		return err
	}
	if a.Status != http.StatusOK {
		return fmt.Errorf("answer %d: %s", a.Status, a.Raw)
	}
	if task, ok := a.Body["task"].(map[string]any); ok && task["status"] != string(contract.TaskStatusCompleted) {
		return fmt.Errorf("task not completed: %s", a.Raw)
	}
	return nil
}

// durableFloor returns one request of the floor variant (see BenchmarkSyncConverge): a commit,
// a JetStream publish awaited until its consumer has it, and the consumer's commit. Its stream
// and consumer are the benchmark's own, so the converger sees nothing of it.
func (c *convergeEnv) durableFloor(b *testing.B) func() error {
	b.Helper()
	ctx := b.Context()
	_, err := c.Pool.Exec(ctx, `CREATE TABLE bench_floor (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)`)
	require.NoError(b, err)
	_, err = c.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_FLOOR", Subjects: []string{"bench.floor"}, Storage: jetstream.FileStorage})
	require.NoError(b, err)
	cons, err := c.JS.OrderedConsumer(ctx, "BENCH_FLOOR", jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	require.NoError(b, err)
	var waiting sync.Map // message id → chan error
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_, err := c.Pool.Exec(ctx, `INSERT INTO bench_floor (payload) VALUES ($1)`, m.Data())
		if ch, ok := waiting.Load(m.Headers().Get(jetstream.MsgIDHeader)); ok {
			ch.(chan error) <- err
		}
	})
	require.NoError(b, err)
	b.Cleanup(cc.Stop)
	payload := make([]byte, 512) // about a converge request's size
	return func() error {
		if _, err := c.Pool.Exec(ctx, `INSERT INTO bench_floor (payload) VALUES ($1)`, payload); err != nil {
			return err
		}
		id := taskspec.NewID()
		done := make(chan error, 1)
		waiting.Store(id, done)
		defer waiting.Delete(id)
		if _, err := c.JS.Publish(ctx, "bench.floor", payload, jetstream.WithMsgID(id)); err != nil {
			return err
		}
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("floor message %s not delivered within 30s", id)
		}
	}
}

// parallel runs fn b.N times over clients goroutines, reports the median latency of a call and
// the calls per second, and returns the median. The first error of fn stops the run and fails
// the benchmark.
func parallel(b *testing.B, clients int, fn func() error) time.Duration {
	b.Helper()
	work := make(chan struct{})
	failed := make(chan struct{})
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, b.N)
		firstErr  error
	)
	for range clients {
		wg.Go(func() {
			for range work {
				start := time.Now()
				if err := fn(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						close(failed)
					}
					mu.Unlock()
					return
				}
				d := time.Since(start)
				mu.Lock()
				latencies = append(latencies, d)
				mu.Unlock()
			}
		})
	}
	b.ResetTimer()
feed:
	for range b.N {
		select {
		case work <- struct{}{}:
		case <-failed:
			break feed
		}
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	slices.Sort(latencies)
	p50 := latencies[len(latencies)/2]
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	return p50
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// dbCounters are the database's totals of transactions and of rows written (inserted, updated
// or deleted), from pg_stat_database.
type dbCounters struct{ xacts, rows int64 }

// dbWork reads the counters once the backends have flushed their statistics (at most a second
// after their last transaction).
func (c *convergeEnv) dbWork(b *testing.B) dbCounters {
	b.Helper()
	time.Sleep(1100 * time.Millisecond)
	var d dbCounters
	if err := c.Pool.QueryRow(b.Context(), `SELECT pg_stat_clear_snapshot()`).Scan(new(any)); err != nil {
		b.Fatal(err)
	}
	if err := c.Pool.QueryRow(b.Context(), `
		SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()`).
		Scan(&d.xacts, &d.rows); err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkFairShare measures what a flood from one tenant does to another tenant's sync
// converges: tenant B's median latency (p50-ms) while tenant A keeps as many async tasks in
// flight as its cap lets it (sixteen callers that create tasks without pause, taking the
// 429s), as a ratio of B's median alone, measured first in the same run (x-alone; goal 2).
// flood-uncapped is the same flood through an API replica without the tenant cap.
//
// The simulated provider answers each call in 20 ms, so a task holds its converger slot for
// about 140 ms, as a real one holds it for seconds, and the converger runs 50 tasks at once, as
// one whose provider allows 50 concurrent calls does: A's flood is more than it can run.
func BenchmarkFairShare(b *testing.B) {
	c := newAPIEnv(b, 20*time.Millisecond)
	c.goRun(c.convergerWith(b, 50).Run)
	tenantA, keyA := c.insertTenant("flooder", "running")
	tenantB, keyB := c.insertTenant("bystander", "running")
	c.unlimited(tenantA)
	c.unlimited(tenantB)
	syncBody := map[string]any{"prompt": "Design a rate limiter for a multi-tenant API. [sim:converge]", "type": "design"}
	asyncBody := map[string]any{"prompt": "Design a rate limiter for a multi-tenant API. [sim:converge]", "type": "design", "async": true}
	converge := func() error {
		return completed(benchCall(c.URL, "/api/v1/converge", keyB, syncBody))
	}

	// flood has sixteen callers create A's tasks through the API at base until stop is closed.
	flood := func(b *testing.B, base string) (stop func()) {
		done := make(chan struct{})
		var wg sync.WaitGroup
		var created, refused atomic.Int64
		for range 16 {
			wg.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					a, err := benchCall(base, "/api/v1/converge", keyA, asyncBody)
					if err != nil {
						b.Error(err)
						return
					}
					switch a.Status {
					case http.StatusAccepted:
						created.Add(1)
					case http.StatusTooManyRequests:
						refused.Add(1)
						time.Sleep(10 * time.Millisecond)
					default:
						b.Errorf("flood: %d %s", a.Status, a.Raw)
						return
					}
				}
			})
		}
		time.Sleep(time.Second) // A's tasks pile up.
		return func() {
			close(done)
			wg.Wait()
			b.ReportMetric(float64(created.Load()), "flood-created")
			b.ReportMetric(float64(refused.Load()), "flood-refused")
		}
	}

	var alone time.Duration
	b.Run("alone", func(b *testing.B) { alone = parallel(b, 1, converge) })
	b.Run("flood", func(b *testing.B) {
		stop := flood(b, c.URL)
		p50 := parallel(b, 1, converge)
		stop()
		b.ReportMetric(float64(p50)/float64(alone), "x-alone")
	})
	// The same flood through an API replica without the tenant cap: what the cap prevents.
	b.Run("flood-uncapped", func(b *testing.B) {
		stop := flood(b, c.serveAPIWith(api.ConvergeConfig{MaxTenantTasks: 1 << 30}))
		p50 := parallel(b, 1, converge)
		stop()
		b.ReportMetric(float64(p50)/float64(alone), "x-alone")
	})
}

// BenchmarkBudgetRace runs 50 sync runs of one tenant at once across two API replicas and two
// convergers against a monthly budget that fits three runs' worst case at a time, and reports
// the spend over the limit (overshoot-micros, 0 when the budget holds), the runs that ran and
// the runs refused with 402. Its baseline, from the same run, is what a budget checked before
// each run with the cost added after it (no reservation) would have let through: all the runs,
// as each finds nothing spent yet, at the mean cost of the runs that ran.
func BenchmarkBudgetRace(b *testing.B) {
	const runs, limit = 50, 150_000
	for range b.N {
		r := raceBudget(b, runs, limit)
		unreserved := r.spent / int64(max(1, r.ran)) * runs
		b.ReportMetric(float64(max(0, r.spent-r.limit)), "overshoot-micros")
		b.ReportMetric(float64(r.ran), "ran")
		b.ReportMetric(float64(r.refused), "refused-402")
		b.Logf("reserved: %d of %d runs ran, %d refused 402, spent %d of %d micro-units (overshoot %d); "+
			"checked before and added after: %d of %d runs pass, spend about %d (overshoot about %d)",
			r.ran, runs, r.refused, r.spent, limit, max(0, r.spent-limit), runs, runs, unreserved, max(0, unreserved-limit))
	}
}
