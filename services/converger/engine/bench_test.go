package engine_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
)

// timed measures the calls and the time spent inside the provider it wraps, so the engine's
// own overhead can be told apart from provider time in the same run.
type timed struct {
	next  llm.Provider
	ns    atomic.Int64
	calls atomic.Int64
}

func (t *timed) Name() string { return t.next.Name() }

func (t *timed) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	start := time.Now()
	resp, err := t.next.Complete(ctx, req)
	t.ns.Add(int64(time.Since(start)))
	t.calls.Add(1)
	return resp, err
}

// BenchmarkEngineRound measures the engine's overhead per round with a zero-latency simulated
// provider: prompt building, parsing, similarity, scoring, stop rules and the result. The
// time spent inside the provider (generating the simulated replies) is measured in the same
// run and reported apart; engine-ns/round excludes it. The converge scenario includes its
// synthesis call, amortised over its three rounds.
func BenchmarkEngineRound(b *testing.B) {
	for _, scenario := range []string{"never", "converge"} {
		b.Run("scenario="+scenario, func(b *testing.B) {
			p := &timed{next: simulated.New(simulated.Config{})}
			e := newEngine(b, p)
			tk := task("[sim:" + scenario + "]")
			rounds := 0
			b.ReportAllocs()
			for b.Loop() {
				res, err := e.Run(b.Context(), tk, engine.Options{})
				if err != nil {
					b.Fatal(err)
				}
				rounds += len(res.Rounds)
			}
			total, provider := b.Elapsed(), time.Duration(p.ns.Load())
			b.ReportMetric(float64(total.Nanoseconds())/float64(rounds), "ns/round")
			b.ReportMetric(float64((total-provider).Nanoseconds())/float64(rounds), "engine-ns/round")
			b.ReportMetric(float64(provider.Nanoseconds())/float64(rounds), "provider-ns/round")
		})
	}
}

// BenchmarkThroughput keeps `tasks` convergence tasks in flight on one engine, against a
// simulated provider with a fixed latency per call, and reports how close it comes to the
// ideal: every task always waiting on exactly one provider call, i.e. tasks/latency calls per
// second.
//
// Each worker runs b.N tasks back to back. With start=staggered the workers begin spread
// evenly over one latency period, as tasks taken from a queue arrive in a running service,
// so their calls stay spread over time; ideal-ratio is then the summed ideal busy time
// (calls × latency) over the summed measured busy time of the workers, which is the measured
// throughput over the ideal in steady state. With start=together all workers start at once,
// so every call of every task falls due in the same instant (a worst case that a service never
// sees after its first batch); ideal-ratio is calls per second over tasks/latency. The raw
// variant is the baseline measured in the same run: the same workers calling the provider
// directly, as many times as a converging task does, with no engine.
func BenchmarkThroughput(b *testing.B) {
	for _, c := range []struct {
		tasks   int
		latency time.Duration
	}{
		{1000, 100 * time.Millisecond},
		{1000, 50 * time.Millisecond},
		{2000, 100 * time.Millisecond},
	} {
		for _, staggered := range []bool{true, false} {
			start := "together"
			if staggered {
				start = "staggered"
			}
			name := fmt.Sprintf("tasks=%d/latency=%s/start=%s", c.tasks, c.latency, start)
			b.Run(name+"/engine", func(b *testing.B) {
				p := &timed{next: simulated.New(simulated.Config{Latency: c.latency})}
				e := newEngine(b, p)
				tk := task("[sim:converge]")
				m := inFlight(b, c.tasks, c.latency, staggered, func(ctx context.Context) int {
					res, err := e.Run(ctx, tk, engine.Options{})
					if err != nil || res.StopReason != engine.StopConverged {
						b.Errorf("run: %v %s", err, res.StopReason)
					}
					return 7 // Three rounds of two turns and a synthesis.
				})
				if got := p.calls.Load(); got != m.calls {
					b.Fatalf("provider saw %d calls, want %d", got, m.calls)
				}
				m.report(b, c.tasks, c.latency, staggered)
			})
			b.Run(name+"/raw", func(b *testing.B) {
				p := simulated.New(simulated.Config{Latency: c.latency})
				req := llm.Request{System: "s", Messages: []llm.Message{{Role: llm.RoleUser, Content: "Task [sim:converge]"}}}
				m := inFlight(b, c.tasks, c.latency, staggered, func(ctx context.Context) int {
					for range 7 {
						if _, err := p.Complete(ctx, req); err != nil {
							b.Error(err)
						}
					}
					return 7
				})
				m.report(b, c.tasks, c.latency, staggered)
			})
		}
	}
}

type throughput struct {
	calls   int64         // provider calls made by all workers
	busy    time.Duration // summed wall time of the workers from their start to their end
	elapsed time.Duration // wall time from the first start to the last end
}

// inFlight runs workers goroutines that each call task b.N times (task returns the provider
// calls it made), starting together or spread evenly over one latency period.
func inFlight(b *testing.B, workers int, latency time.Duration, staggered bool, task func(ctx context.Context) int) throughput {
	b.Helper()
	ctx := b.Context()
	start := make(chan struct{})
	var (
		wg    sync.WaitGroup
		calls atomic.Int64
		busy  atomic.Int64
	)
	for i := range workers {
		wg.Go(func() {
			<-start
			if staggered {
				time.Sleep(time.Duration(i) * latency / time.Duration(workers))
			}
			began := time.Now()
			for range b.N {
				calls.Add(int64(task(ctx)))
			}
			busy.Add(int64(time.Since(began)))
		})
	}
	b.ResetTimer()
	began := time.Now()
	close(start)
	wg.Wait()
	return throughput{calls: calls.Load(), busy: time.Duration(busy.Load()), elapsed: time.Since(began)}
}

func (m throughput) report(b *testing.B, tasks int, latency time.Duration, staggered bool) {
	ideal := float64(tasks) / latency.Seconds()
	ratio := float64(m.calls) / m.elapsed.Seconds() / ideal
	if staggered {
		ratio = float64(m.calls) * latency.Seconds() / m.busy.Seconds()
	}
	b.ReportMetric(float64(tasks), "in-flight")
	b.ReportMetric(ratio*ideal, "calls/s")
	b.ReportMetric(ratio, "ideal-ratio")
}
