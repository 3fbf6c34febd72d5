package api_test

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// BenchmarkSyncConverge measures what the platform adds to a convergence. Its converge
// variant is a sync POST /api/v1/converge with a zero-latency simulated provider, so all of
// its time is the platform's: HTTP, the tenant's key, the rate limit, validation, the task and
// its outbox row, the relay to JetStream, the converger's claim, seven provider calls with the
// turns and rounds persisted and streamed, the result and its event through the outbox, the
// waiting request woken on core NATS, the task read back and answered. Its bare variant, the
// baseline measured in the same run, is a handler on the same HTTP server and middleware that
// decodes a JSON body and answers.
//
// Each variant reports the mean latency of a request (ms/req) and the requests answered per
// second; the converge variant adds its overhead over the bare handler, in all and per round
// (the task converges in three rounds and a synthesis). clients=1 is one caller at a time;
// clients=16 has sixteen at once.
func BenchmarkSyncConverge(b *testing.B) {
	c := newConvergeEnv(b, 0)
	envID, key := c.insertTenant("bench", "running")
	c.unlimited(envID)
	body := map[string]any{"prompt": "Design a rate limiter for a multi-tenant API. [sim:converge]", "type": "design"}
	for _, clients := range []int{1, 16} {
		var bare time.Duration
		b.Run(fmt.Sprintf("clients=%d/bare", clients), func(b *testing.B) {
			bare = parallel(b, clients, func() {
				if a := call(b, c.URL, http.MethodPost, "/bench/bare", "", body, nil); a.Status != http.StatusOK {
					b.Fatalf("bare: %d %s", a.Status, a.Raw)
				}
			})
		})
		b.Run(fmt.Sprintf("clients=%d/converge", clients), func(b *testing.B) {
			latency := parallel(b, clients, func() {
				a := call(b, c.URL, http.MethodPost, "/api/v1/converge", key, body, nil)
				if a.Status != http.StatusOK || a.task(b).Status != tasks.StatusCompleted {
					b.Fatalf("converge: %d %s", a.Status, a.Raw)
				}
			})
			if bare > 0 {
				b.ReportMetric(ms(latency-bare), "overhead-ms/req")
				b.ReportMetric(ms(latency-bare)/3, "overhead-ms/round")
				b.ReportMetric(float64(latency)/float64(bare), "x-bare")
			}
		})
	}
}

// parallel runs fn b.N times over clients goroutines, reports the mean latency of a call and
// the calls per second, and returns the mean latency.
func parallel(b *testing.B, clients int, fn func()) time.Duration {
	b.Helper()
	work := make(chan struct{})
	var (
		wg    sync.WaitGroup
		total atomic.Int64
	)
	for range clients {
		wg.Go(func() {
			for range work {
				start := time.Now()
				fn()
				total.Add(int64(time.Since(start)))
			}
		})
	}
	b.ResetTimer()
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	latency := time.Duration(total.Load() / int64(b.N))
	b.ReportMetric(ms(latency), "ms/req")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	return latency
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
