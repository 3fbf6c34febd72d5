package ha_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkConvergeThroughput_ThreeNodesVsOne measures how many converge tasks a second the
// platform takes and finishes, with two replicas of every service, on one JetStream node and
// then on a cluster of three keeping three copies of every stream, with one of the three
// stopped when half the tasks are in. Each sub-benchmark sends `tasks` asynchronous requests
// from eight clients and waits until every accepted task is finished; the three-node one
// reports its throughput beside the one-node one's from the same run, and checks that nothing
// was lost (every accepted task finished, the ledger exact).
//
//	go test -run '^$' -bench ConvergeThroughput -benchtime 1x ./internal/ha/
func BenchmarkConvergeThroughput_ThreeNodesVsOne(b *testing.B) {
	const tasks = 2000
	var oneNode float64
	b.Run("one-node", func(b *testing.B) {
		for b.Loop() {
			oneNode = convergeThroughput(b, 1, tasks, false)
		}
		b.ReportMetric(oneNode, "tasks/s")
	})
	for _, stop := range []bool{false, true} {
		name := map[bool]string{false: "three-nodes", true: "three-nodes-one-stopped"}[stop]
		b.Run(name, func(b *testing.B) {
			var threeNodes float64
			for b.Loop() {
				threeNodes = convergeThroughput(b, 3, tasks, stop)
			}
			b.ReportMetric(threeNodes, "tasks/s")
			if oneNode > 0 {
				b.ReportMetric(threeNodes/oneNode, "x-one-node")
			}
		})
	}
}

// convergeThroughput starts a cluster of natsNodes nodes, sends n converge requests and
// returns the tasks finished per second, from the first request to the last task's end.
// With stopNode, a JetStream node is stopped once half the requests are accepted.
func convergeThroughput(b *testing.B, natsNodes, n int, stopNode bool) float64 {
	b.Helper()
	c := startCluster(b, natsNodes)
	keys := []string{c.spawn(b, "bench-1").APIKey, c.spawn(b, "bench-2").APIKey}
	l := &load{c: c, cancel: func() {}}
	ctx := context.Background()

	start := time.Now()
	var sent atomic.Int64
	var once sync.Once
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := sent.Add(1); i <= int64(n); i = sent.Add(1) {
				code, _ := l.decide(ctx, http.MethodPost, "/api/v1/converge", keys[w%len(keys)],
					map[string]any{"prompt": fmt.Sprintf("benchmark request %d", i), "async": true})
				if code == http.StatusAccepted && l.accepted.Add(1) == int64(n/2) && stopNode {
					once.Do(func() { c.stopNATSNode(0) })
				}
			}
		})
	}
	wg.Wait()
	accepted := l.accepted.Load()
	require.Eventually(b, func() bool {
		var finished int64
		err := c.Pool.QueryRow(ctx, `SELECT count(*) FROM converger.convergence_tasks WHERE status IN ('completed', 'failed', 'cancelled')`).Scan(&finished)
		return err == nil && finished >= accepted
	}, 5*time.Minute, 20*time.Millisecond)
	took := time.Since(start)
	require.EqualValues(b, n, accepted, "every request accepted (%d undecided)", l.undecided.Load())
	c.requireTasksFinished(b, time.Minute)
	c.requireLedgerExact(b, time.Minute)
	// The longest time no task finished: where a stopped node's streams and consumers
	// elected new leaders.
	var pause float64
	require.NoError(b, c.Pool.QueryRow(ctx, `
		SELECT coalesce(max(gap), 0) FROM (
			SELECT extract(epoch FROM finished_at - lag(finished_at) OVER (ORDER BY finished_at)) AS gap
			FROM converger.convergence_tasks WHERE finished_at IS NOT NULL) g`).Scan(&pause))
	b.ReportMetric(pause, "longest-pause-s")
	b.Logf("%d JetStream node(s)%s: %d tasks in %s, %.1f tasks/s; the longest time no task finished: %.2f s",
		natsNodes, map[bool]string{true: ", one stopped midway"}[stopNode], accepted, took.Round(time.Millisecond), float64(accepted)/took.Seconds(), pause)
	return float64(accepted) / took.Seconds()
}
