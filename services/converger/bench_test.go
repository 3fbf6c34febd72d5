package converger_test

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

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

// sample is the gauge at one instant, with the process's resident memory and the machine's
// CPU time so far.
type sample struct {
	at          time.Time
	done        int64
	outstanding int64
	rss         int64 // bytes
	cpu         cpuTimes
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
				samples = append(samples, sample{now, g.done.Load(), g.outstanding.Load(), residentBytes(), machineCPU()})
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

// residentBytes is the resident set of this process: the converger or the engine under test,
// with the benchmark's own buffers and, for the service, its embedded NATS server. 0 when
// /proc cannot tell.
func residentBytes() int64 {
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(statm), &size, &resident); err != nil {
		return 0
	}
	return resident * int64(os.Getpagesize())
}

// cpuTimes are the machine's CPU times since boot, all CPUs together, in clock ticks: busy
// (every process: this one, PostgreSQL's, the kernel's) and in all.
type cpuTimes struct{ busy, total uint64 }

// machineCPU reads the machine's CPU times from /proc/stat; zero when it cannot tell.
func machineCPU() cpuTimes {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(fields) < 9 || fields[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, f := range fields[1:9] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return cpuTimes{}
		}
		t.total += n
		if i != 3 && i != 4 { // idle and iowait
			t.busy += n
		}
	}
	return t
}

// steady is the throughput of a run in its steady state: after the first wave of calls (the
// ramp: the first `slots` calls) and before the last `slots` tasks' calls (the tail, when the
// queue is empty and slots fall idle one by one).
type steady struct {
	callsPerSec float64
	inFlight    float64 // mean calls outstanding: tasks waiting on the provider
	window      time.Duration
	peakRSS     int64 // bytes, over the whole run
	// cpuBusy is the share of the machine's CPU time that was busy during the window: near 1,
	// the machine, not the service's design, sets the throughput.
	cpuBusy float64
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
	var peak int64
	for _, s := range samples {
		peak = max(peak, s.rss)
	}
	var busy float64
	if c0, c1 := samples[first].cpu, samples[last].cpu; c1.total > c0.total {
		busy = float64(c1.busy-c0.busy) / float64(c1.total-c0.total)
	}
	return steady{
		callsPerSec: float64(samples[last].done-samples[first].done) / w.Seconds(),
		inFlight:    float64(sum) / float64(last-first+1),
		window:      w,
		peakRSS:     peak,
		cpuBusy:     busy,
	}
}

// run aggregates b.N runs of one variant, reports them, and returns their ideal ratio.
func (c throughputCase) run(b *testing.B, variant func(b *testing.B, slots, total int, latency time.Duration) steady) float64 {
	var agg steady
	for range b.N {
		debug.FreeOSMemory() // What an earlier run left is not counted in this one's rss-MiB.
		s := variant(b, c.slots, 3*c.slots, c.latency)
		agg.callsPerSec += s.callsPerSec / float64(b.N)
		agg.inFlight += s.inFlight / float64(b.N)
		agg.window += s.window / time.Duration(b.N)
		agg.peakRSS = max(agg.peakRSS, s.peakRSS)
		agg.cpuBusy += s.cpuBusy / float64(b.N)
	}
	ideal := float64(c.slots) / c.latency.Seconds()
	ratio := agg.callsPerSec / ideal
	b.ReportMetric(agg.inFlight, "in-flight")
	b.ReportMetric(agg.callsPerSec, "calls/s")
	b.ReportMetric(ideal, "ideal-calls/s")
	b.ReportMetric(ratio, "ideal-ratio")
	b.ReportMetric(agg.window.Seconds(), "window-s")
	b.ReportMetric(float64(agg.peakRSS)/(1<<20), "rss-MiB")
	b.ReportMetric(agg.cpuBusy, "machine-cpu-busy")
	return ratio
}

type throughputCase struct {
	slots   int
	latency time.Duration
}

// BenchmarkServiceThroughput measures how many tasks one converger process keeps in flight,
// and what fraction of the ideal throughput it reaches, through the real service path: the
// requests in JetStream, the durable consumer with Concurrency = in-flight, a claim, every
// round persisted in PostgreSQL with its turns and its progress event, the result and its
// converge.completed event committed through the outbox. The provider is the simulated one at
// a fixed latency per call; ideal is in-flight ÷ latency calls per second, every task always
// waiting on exactly one call.
//
// Each iteration queues 3 × in-flight converging tasks (7 calls each) before the converger
// starts, and measures the steady state between the ramp and the tail (see steadyState). The
// engine variant is the baseline, measured first in the same run: in-flight workers running
// the same tasks on the engine alone, no consumer and no database. The service variant reports
// its ideal ratio over the engine's (x-engine; goal 0.9). Both report the peak resident memory
// of the process (rss-MiB; goal 1 GiB at 10,000 in flight; the service runs under the memory
// limit its deployment gives it) and how busy the machine's CPUs were in the window
// (machine-cpu-busy, 0 to 1, every process counted).
func BenchmarkServiceThroughput(b *testing.B) {
	for _, c := range []throughputCase{
		{1000, time.Second},
		{1000, 500 * time.Millisecond},
		{1000, 250 * time.Millisecond},
		{10000, time.Second},
	} {
		name := fmt.Sprintf("in-flight=%d/latency=%s", c.slots, c.latency)
		var engineRatio float64
		b.Run(name+"/engine", func(b *testing.B) { engineRatio = c.run(b, engineRun) })
		b.Run(name+"/service", func(b *testing.B) {
			if ratio := c.run(b, serviceRun); engineRatio > 0 {
				b.ReportMetric(ratio/engineRatio, "x-engine")
			}
		})
	}
}

// convergerMemoryLimit is the soft memory limit the compose and swarm files give the converger
// (GOMEMLIMIT); the service variant runs under it.
const convergerMemoryLimit = 900 << 20

func serviceRun(b *testing.B, slots, total int, latency time.Duration) steady {
	b.StopTimer()
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(convergerMemoryLimit))
	e := newEnv(b)
	envID := e.tenant("bench")
	ctx := context.Background()
	req := events.ConvergeRequest{EnvID: envID, OrgID: 1, Prompt: "Design a rate limiter for a multi-tenant API. [sim:converge]", Type: "design", AgentARole: "Solution Architect", AgentBRole: "Security and Reliability Reviewer", MaxRounds: 4}
	var queued errgroup.Group
	queued.SetLimit(8)
	for range total {
		r := req
		r.TaskID = taskspec.NewID()
		queued.Go(func() error {
			env, err := events.NewEnvelope("convergence/api", events.TypeConvergeRequest, r.TaskID, "", r)
			if err != nil {
				return err
			}
			return e.ob.Batch(ctx, &pgx.Batch{}, events.SubjectConvergeRequest, env)
		})
	}
	require.NoError(b, queued.Wait())
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
	// The calls are counted in process while the service runs; the tasks' table, a scan of
	// every task, is asked only after the last call, so the benchmark takes no CPU from it.
	require.Eventually(b, func() bool { return g.done.Load() == int64(7*total) }, 10*time.Minute, 20*time.Millisecond)
	require.Eventually(b, func() bool {
		var n int
		require.NoError(b, e.pool.QueryRow(ctx, `SELECT count(*) FROM convergence_tasks WHERE status = 'completed'`).Scan(&n))
		return n == total
	}, time.Minute, 100*time.Millisecond)
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
