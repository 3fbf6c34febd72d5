package engine_test

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// recorder counts and keeps the requests that reach the provider it wraps.
type recorder struct {
	next llm.Provider
	mu   sync.Mutex
	reqs []llm.Request
}

func (r *recorder) Name() string { return r.next.Name() }

func (r *recorder) Complete(ctx context.Context, req llm.Request) (llm.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	return r.next.Complete(ctx, req)
}

func (r *recorder) requests() []llm.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]llm.Request(nil), r.reqs...)
}

func (r *recorder) calls() int { return len(r.requests()) }

func newEngine(t testing.TB, p llm.Provider) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Config{}, p, discard())
	require.NoError(t, err)
	return e
}

// requireConsistent checks that a score is what its breakdown says: each component's points
// are its weight times its value, the weights sum to one, and the value is the rounded sum of
// the points.
func requireConsistent(t *testing.T, s engine.Score) {
	t.Helper()
	require.Equal(t, engine.MethodVersion, s.MethodVersion)
	var weights, points float64
	for _, c := range s.Breakdown.Components() {
		require.GreaterOrEqual(t, c.Value, 0.0)
		require.LessOrEqual(t, c.Value, 100.0)
		require.InDelta(t, c.Weight*c.Value, c.Points, 0.005+1e-9)
		weights += c.Weight
		points += c.Points
	}
	require.InDelta(t, 1.0, weights, 1e-9)
	require.Equal(t, int(math.Round(points)), s.Value)
	require.GreaterOrEqual(t, s.Value, 0)
	require.LessOrEqual(t, s.Value, 100)
}

// requireResultConsistent checks every round's score, the result's score, and that usage per
// agent adds up to the total and to the turns.
func requireResultConsistent(t *testing.T, res engine.Result) {
	t.Helper()
	requireConsistent(t, res.Score)
	var a, b, s llm.Usage
	for _, rd := range res.Rounds {
		requireConsistent(t, rd.Score)
		a, b = a.Add(rd.A.Usage), b.Add(rd.B.Usage)
	}
	if res.Synthesis != nil {
		s = res.Synthesis.Usage
	}
	require.Equal(t, res.Usage.A.Add(res.Usage.B).Add(res.Usage.Synthesis), res.Usage.Total)
	if len(res.Rounds) > 0 {
		require.Equal(t, res.Rounds[len(res.Rounds)-1].Score, res.Score)
	}
	// Turns hold at most what the agents spent: an interrupted turn is billed but not kept.
	require.LessOrEqual(t, a.Total(), res.Usage.A.Total())
	require.LessOrEqual(t, b.Total(), res.Usage.B.Total())
	require.Equal(t, s, res.Usage.Synthesis)
	require.Equal(t, res.StopReason == engine.StopConverged, res.Status == engine.StatusConverged)
}
