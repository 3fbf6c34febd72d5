package leader_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/leader"
	"github.com/convergence-dev/convergence/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

// replica is one process competing for a role: its own registry, its own election loop.
type replica struct {
	reg  *prometheus.Registry
	stop context.CancelFunc
	done chan struct{}
}

// leading reports the replica's convergence_leader gauge for role.
func (r *replica) leading(t *testing.T, role string) float64 {
	return r.value(t, "convergence_leader", role)
}

// value reports the replica's metric of role, gauge or counter.
func (r *replica) value(t *testing.T, metric, role string) float64 {
	t.Helper()
	families, err := r.reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == role {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// terms is what lead saw: who began a term, in order, and who holds one now.
type terms struct {
	mu      sync.Mutex
	began   []string
	holders map[string]bool
}

func (ts *terms) lead(name string) func(context.Context) {
	return func(ctx context.Context) {
		ts.mu.Lock()
		ts.began = append(ts.began, name)
		ts.holders[name] = true
		ts.mu.Unlock()
		<-ctx.Done()
		ts.mu.Lock()
		delete(ts.holders, name)
		ts.mu.Unlock()
	}
}

// holder returns the replica that began the last term, if that term has not ended, and how
// many terms began.
func (ts *terms) holder() (string, int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if n := len(ts.began); n > 0 && ts.holders[ts.began[n-1]] {
		return ts.began[n-1], n
	}
	return "", len(ts.began)
}

func startReplica(t *testing.T, e leader.Election, db *pgtest.DB, name string, ts *terms) *replica {
	t.Helper()
	reg := prometheus.NewRegistry()
	r := &replica{reg: reg, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	r.stop = cancel
	go func() {
		defer close(r.done)
		assert.NoError(t, e.Run(ctx, db.Pool, leader.NewMetrics(reg), slog.New(slog.DiscardHandler), ts.lead(name)))
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func TestElection_OneReplicaLeads_AndTheOtherTakesOverWhenItStopsOrLosesItsConnection(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	e := leader.Election{Role: "test-reconciler", CheckEvery: 50 * time.Millisecond, RetryEvery: 50 * time.Millisecond}
	ts := &terms{holders: map[string]bool{}}
	a := startReplica(t, e, db, "a", ts)
	b := startReplica(t, e, db, "b", ts)
	byName := map[string]*replica{"a": a, "b": b}

	waitForTerm := func(n int) string {
		t.Helper()
		var name string
		require.Eventually(t, func() bool {
			var began int
			name, began = ts.holder()
			return name != "" && began >= n
		}, 30*time.Second, 10*time.Millisecond, "term %d never began", n)
		return name
	}

	first := waitForTerm(1)
	require.Eventually(t, func() bool { return byName[first].leading(t, e.Role) == 1 }, 10*time.Second, 10*time.Millisecond)
	other := map[string]string{"a": "b", "b": "a"}
	time.Sleep(300 * time.Millisecond) // several retries of the other replica
	_, began := ts.holder()
	require.Equal(t, 1, began, "only one replica leads while the leader is well")
	require.Zero(t, byName[other[first]].leading(t, e.Role))

	// The leader's database connection is cut, as when PostgreSQL restarts or the network
	// drops it: the lock goes with it, the term ends, and a new one begins on whichever
	// replica asks first.
	_, err := db.Pool.Exec(t.Context(), `
		SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	require.NoError(t, err)
	second := waitForTerm(2)
	require.Eventually(t, func() bool {
		return byName[second].leading(t, e.Role) == 1 && byName[other[second]].leading(t, e.Role) == 0
	}, 10*time.Second, 10*time.Millisecond)
	terms := byName["a"].value(t, "convergence_leader_terms_total", e.Role) + byName["b"].value(t, "convergence_leader_terms_total", e.Role)
	require.InDelta(t, 2, terms, 0)

	// The leader stops: the other replica, still competing, leads.
	byName[second].stop()
	<-byName[second].done
	require.Equal(t, other[second], waitForTerm(3))
	require.InDelta(t, 1, byName[other[second]].leading(t, e.Role), 0)
}

func TestElection_NoRoleOrChecksTooRare_Refused(t *testing.T) {
	t.Parallel()
	err := leader.Election{}.Run(t.Context(), nil, nil, slog.New(slog.DiscardHandler), func(context.Context) {})
	require.ErrorContains(t, err, "role")
	err = leader.Election{Role: "slow", CheckEvery: time.Minute}.Run(t.Context(), nil, nil, slog.New(slog.DiscardHandler), func(context.Context) {})
	require.ErrorContains(t, err, "idle_session_timeout")
}
