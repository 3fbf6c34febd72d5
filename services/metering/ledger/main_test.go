package ledger_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

// testPrices: $3/$15/$0.30 per million for claude-sonnet-4*, $2.50/$10/$1.25 for gpt-4o*, and
// $0.00001 per container-second (10 micros).
const testPrices = `{"version": "test", "currency": "USD", "containerSecond": "0.00001",
	"models": [
		{"provider": "anthropic", "model": "claude-sonnet-4*", "inputPerMillion": "3", "outputPerMillion": "15", "cachedPerMillion": "0.30"},
		{"provider": "openai", "model": "gpt-4o*", "inputPerMillion": "2.50", "outputPerMillion": "10", "cachedPerMillion": "1.25"}
	]}`

func register(t *testing.T, db ledger.DB, doc string) ledger.Prices {
	t.Helper()
	tab, err := pricing.Parse([]byte(doc))
	require.NoError(t, err)
	p, err := ledger.RegisterPrices(t.Context(), db, tab)
	require.NoError(t, err)
	return p
}

func setup(t *testing.T) (*pgxpool.Pool, *ledger.Store, ledger.Prices) {
	t.Helper()
	pool := pgtest.New(t)
	return pool, ledger.NewStore(pool), register(t, pool, testPrices)
}

var day0 = time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)

func sonnet(agent string, in, out, cached int64) events.AgentUsage {
	return events.AgentUsage{Agent: agent, Provider: "anthropic", Model: "claude-sonnet-4-20250514", Calls: 2,
		Usage: events.Usage{InputTokens: in, OutputTokens: out, CachedTokens: cached, TotalTokens: in + out}}
}

func gpt(agent string, in, out int64) events.AgentUsage {
	return events.AgentUsage{Agent: agent, Provider: "openai", Model: "gpt-4o-2024-08-06", Calls: 1,
		Usage: events.Usage{InputTokens: in, OutputTokens: out, TotalTokens: in + out}}
}

// task is a completed task of tenant env (in org env/100+1) with the given agents.
func task(id string, env int64, at time.Time, agents ...events.AgentUsage) ledger.TaskUsage {
	score := 80.0
	var u events.Usage
	for _, a := range agents {
		u = u.Add(a.Usage)
	}
	return ledger.TaskUsage{EventID: "ev-" + id, TaskID: id, EnvID: env, OrgID: env/100 + 1, Score: &score,
		FinishedAt: at, Agents: agents, Usage: u}
}

func record(t *testing.T, s *ledger.Store, p ledger.Prices, batch ...ledger.TaskUsage) ledger.Result {
	t.Helper()
	for _, u := range batch {
		require.NoError(t, u.Validate())
	}
	res, err := s.RecordTasks(t.Context(), p, batch)
	require.NoError(t, err)
	return res
}

func fact(id string, env int64, state events.TenantState, at time.Time) ledger.LifecycleFact {
	return ledger.LifecycleFact{EventID: id, EnvID: env, OrgID: env/100 + 1, State: state, At: at}
}

// sumInt runs a query returning one integer. A query of the daily or monthly rollups first
// merges the pending deltas into them, as the metering does every second.
func sumInt(t *testing.T, db ledger.DB, sql string, args ...any) int64 {
	t.Helper()
	if strings.Contains(sql, "metering_rollup_daily") || strings.Contains(sql, "metering_rollup_monthly") {
		merge(t, db)
	}
	var n int64
	require.NoError(t, db.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
	return n
}

// merge merges the pending rollup deltas, waiting for a merge another connection holds (a
// cancelled one is released when its server process notices).
func merge(t *testing.T, db ledger.DB) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, ran, err := ledger.MergeRollups(t.Context(), db)
		require.NoError(t, err)
		return ran
	}, 10*time.Second, 5*time.Millisecond)
}

func summarize(t *testing.T, db ledger.DB, q ledger.Query) ledger.Summary {
	t.Helper()
	if q.Now.IsZero() {
		q.Now = day0.AddDate(1, 0, 0)
	}
	s, err := ledger.Summarize(t.Context(), db, q)
	require.NoError(t, err, "%+v", q)
	return s
}

func day(offset int) time.Time { return day0.AddDate(0, 0, offset) }
