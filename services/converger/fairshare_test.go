package converger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// TestFairShare_AFloodWaiting_AnotherTenantsTaskTakesAnEarlyTurn: the converger runs two
// tasks at once, and tenant A's twelve take every turn and wait for more. Tenant B's one task,
// sent then, starts in turn with A's, instead of after all of A's tasks that were waiting
// before it.
func TestFairShare_AFloodWaiting_AnotherTenantsTaskTakesAnEarlyTurn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	flooder, bystander := e.tenant("flooder"), e.tenant("bystander")
	req := tasks.Request{Prompt: "Design a rate limiter for a multi-tenant API. [sim:converge]", Type: "design", MaxRounds: 4}
	cfg := testConfig()
	cfg.Concurrency, cfg.MaxWaiting = 2, 20
	e.startConverger(cfg, simulated.New(simulated.Config{Latency: 200 * time.Millisecond}))
	for range 12 {
		e.submit(flooder, req)
	}
	count := func(query string, args ...any) int {
		var n int
		require.NoError(t, e.pool.QueryRow(context.Background(), query, args...).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool {
		return count(`SELECT count(*) FROM convergence_tasks WHERE env_id = $1 AND status = 'running'`, flooder) == 3
	}, 30*time.Second, 5*time.Millisecond, "A's tasks take every turn")
	// The other nine were delivered with the first three and wait for their turn by now (a
	// task runs for seven calls of 200 ms).
	time.Sleep(50 * time.Millisecond)
	id := e.submit(bystander, req)
	rec := e.waitFinished(bystander, id, time.Minute)
	require.Equal(t, tasks.StatusCompleted, rec.Status)

	ahead := count(`
		SELECT count(*) FROM convergence_tasks
		WHERE env_id = $1 AND started_at < (SELECT started_at FROM convergence_tasks WHERE id = $2)`, flooder, id)
	t.Logf("tenant A's tasks that started before B's: %d of 12", ahead)
	// Three turns (two slots and a quarter more, at least one) went to A before B came, and the
	// next to A when A's turn came first; then B's. First come, first served, all twelve
	// would have been ahead.
	require.LessOrEqual(t, ahead, 4, "tenant A's tasks that started before tenant B's one")
}
