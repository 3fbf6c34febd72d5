package converger_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/taskspec"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// gauge wraps a provider and keeps what the throughput benchmarks measure: calls completed and
// calls outstanding, i.e. tasks waiting on the provider right now.
type gauge struct {
	next        llm.Provider
	done        atomic.Int64
	outstanding atomic.Int64
}

func (g *gauge) Name() string { return g.next.Name() }

func (g *gauge) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	g.outstanding.Add(1)
	defer g.outstanding.Add(-1)
	resp, err := g.next.Complete(ctx, req)
	g.done.Add(1)
	return resp, err
}

// sample is the gauge at one instant.
type sample struct {
	at          time.Time
	done        int64
	outstanding int64
}

// sampler records the gauge every 10ms until stopped.
func sampleGauge(g *gauge) (stop func() []sample) {
	var (
		mu      sync.Mutex
		samples []sample
		quit    = make(chan struct{})
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case now := <-t.C:
				mu.Lock()
				samples = append(samples, sample{now, g.done.Load(), g.outstanding.Load()})
				mu.Unlock()
			}
		}
	})
	return func() []sample {
		close(quit)
		wg.Wait()
		return samples
	}
}

// steady is the throughput of a run in its steady state: after the first wave of calls (the
// ramp: the first `slots` calls) and before the last `slots` tasks' calls (the tail, when the
// queue is empty and slots fall idle one by one).
type steady struct {
	callsPerSec float64
	inFlight    float64 // mean calls outstanding: tasks waiting on the provider
	window      time.Duration
}

func steadyState(samples []sample, slots, totalCalls, callsPerTask int64) steady {
	lo, hi := slots, totalCalls-slots*callsPerTask
	first := sort.Search(len(samples), func(i int) bool { return samples[i].done >= lo })
	last := sort.Search(len(samples), func(i int) bool { return samples[i].done >= hi }) - 1
	if first >= len(samples) || last <= first {
		return steady{}
	}
	var sum int64
	for _, s := range samples[first : last+1] {
		sum += s.outstanding
	}
	w := samples[last].at.Sub(samples[first].at)
	return steady{
		callsPerSec: float64(samples[last].done-samples[first].done) / w.Seconds(),
		inFlight:    float64(sum) / float64(last-first+1),
		window:      w,
	}
}

func (s steady) report(b *testing.B, slots int, latency time.Duration) {
	ideal := float64(slots) / latency.Seconds()
	b.ReportMetric(s.inFlight, "in-flight")
	b.ReportMetric(s.callsPerSec, "calls/s")
	b.ReportMetric(ideal, "ideal-calls/s")
	b.ReportMetric(s.callsPerSec/ideal, "ideal-ratio")
	b.ReportMetric(s.window.Seconds(), "window-s")
}

// BenchmarkServiceThroughput measures how many tasks one converger process keeps in flight,
// and what fraction of the ideal throughput it reaches, through the real service path: the
// requests in JetStream, the durable consumer with Concurrency = in-flight, a claim, every
// turn and round persisted in PostgreSQL with its progress event, the result and its
// converge.completed event committed through the outbox. The provider is the simulated one at
// a fixed latency per call; ideal is in-flight ÷ latency calls per second, every task always
// waiting on exactly one call.
//
// Each iteration queues 3 × in-flight converging tasks (7 calls each) before the converger
// starts, and measures the steady state between the ramp and the tail (see steadyState). The
// engine variant is the baseline measured in the same run: in-flight workers running the same
// tasks on the engine alone, no consumer and no database.
func BenchmarkServiceThroughput(b *testing.B) {
	for _, c := range []struct {
		slots   int
		latency time.Duration
	}{
		{1000, time.Second},
		{1000, 500 * time.Millisecond},
		{1000, 250 * time.Millisecond},
	} {
		name := fmt.Sprintf("in-flight=%d/latency=%s", c.slots, c.latency)
		total := 3 * c.slots
		b.Run(name+"/service", func(b *testing.B) {
			var agg steady
			for range b.N {
				s := serviceRun(b, c.slots, total, c.latency)
				agg.callsPerSec += s.callsPerSec / float64(b.N)
				agg.inFlight += s.inFlight / float64(b.N)
				agg.window += s.window / time.Duration(b.N)
			}
			agg.report(b, c.slots, c.latency)
		})
		b.Run(name+"/engine", func(b *testing.B) {
			var agg steady
			for range b.N {
				s := engineRun(b, c.slots, total, c.latency)
				agg.callsPerSec += s.callsPerSec / float64(b.N)
				agg.inFlight += s.inFlight / float64(b.N)
				agg.window += s.window / time.Duration(b.N)
			}
			agg.report(b, c.slots, c.latency)
		})
	}
}

func serviceRun(b *testing.B, slots, total int, latency time.Duration) steady {
	b.StopTimer()
	e := newEnv(b)
	envID := e.tenant("bench")
	ctx := context.Background()
	req := events.ConvergeRequest{EnvID: envID, OrgID: 1, Prompt: "Design a rate limiter for a multi-tenant API. [sim:converge]", Type: "design", AgentARole: "Solution Architect", AgentBRole: "Security and Reliability Reviewer", MaxRounds: 4}
	for range total {
		req.TaskID = taskspec.NewID()
		e.request(req, "")
	}
	require.Eventually(b, func() bool {
		var n int
		require.NoError(b, e.pool.QueryRow(ctx, `SELECT count(*) FROM converger.outbox WHERE published_at IS NULL`).Scan(&n))
		return n == 0
	}, 2*time.Minute, 50*time.Millisecond, "the requests are in JetStream before the converger starts")

	g := &gauge{next: simulated.New(simulated.Config{Latency: latency})}
	cfg := testConfig()
	cfg.Concurrency = slots
	cfg.AckWait = 30 * time.Second
	b.StartTimer()
	stopSampling := sampleGauge(g)
	stop := e.startConverger(cfg, g)
	require.Eventually(b, func() bool {
		var n int
		require.NoError(b, e.pool.QueryRow(ctx, `SELECT count(*) FROM convergence_tasks WHERE status = 'completed'`).Scan(&n))
		return n == total
	}, 10*time.Minute, 20*time.Millisecond)
	samples := stopSampling()
	b.StopTimer()
	stop()
	require.EqualValues(b, 7*total, g.done.Load())
	return steadyState(samples, int64(slots), int64(7*total), 7)
}

func engineRun(b *testing.B, slots, total int, latency time.Duration) steady {
	b.StopTimer()
	g := &gauge{next: simulated.New(simulated.Config{Latency: latency})}
	eng, err := engine.New(engine.Config{}, g, logger())
	require.NoError(b, err)
	task := tasks.Request{Prompt: "Design a rate limiter for a multi-tenant API. [sim:converge]", Type: "design", MaxRounds: 4}.EngineTask("bench")
	queue := make(chan struct{}, total)
	for range total {
		queue <- struct{}{}
	}
	close(queue)
	b.StartTimer()
	stopSampling := sampleGauge(g)
	var wg sync.WaitGroup
	for range slots {
		wg.Go(func() {
			for range queue {
				if _, err := eng.Run(context.Background(), task, engine.Options{}); err != nil {
					b.Error(err)
				}
			}
		})
	}
	wg.Wait()
	samples := stopSampling()
	b.StopTimer()
	return steadyState(samples, int64(slots), int64(7*total), 7)
}
