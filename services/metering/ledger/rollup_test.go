package ledger_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// workload records a random mix of tasks (priced and unpriced models, completed and failed,
// over about two months) and closed lifecycle timelines for tenants in three organizations.
func workload(t *testing.T, s *ledger.Store, p ledger.Prices, seed uint64) {
	t.Helper()
	require.NoError(t, recordWorkload(t.Context(), s, p, seed))
}

// recordWorkload is workload without the test: safe to run in a goroutine of its own.
func recordWorkload(ctx context.Context, s *ledger.Store, p ledger.Prices, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 7))
	envs := []int64{7, 8, 150, 151, 260}
	var batch []ledger.TaskUsage
	for i := range 300 {
		env := envs[rng.IntN(len(envs))]
		at := day0.AddDate(0, 0, -20).Add(time.Duration(rng.Int64N(int64(60 * 24 * time.Hour))))
		agents := []events.AgentUsage{sonnet("A", rng.Int64N(5000)+100, rng.Int64N(2000), rng.Int64N(100))}
		switch rng.IntN(3) {
		case 0:
			agents = append(agents, gpt("B", rng.Int64N(3000), rng.Int64N(1000)))
		case 1:
			agents = append(agents, events.AgentUsage{Agent: "B", Provider: "ollama", Model: "llama3", Calls: 1,
				Usage: events.Usage{InputTokens: 40, OutputTokens: 2, TotalTokens: 42}})
		}
		u := task(fmt.Sprintf("w%d-%d", seed, i), env, at, agents...)
		if rng.IntN(5) == 0 {
			u.Failed, u.Score = true, nil
		} else {
			score := float64(rng.IntN(101))
			u.Score = &score
		}
		batch = append(batch, u)
		if len(batch) == 37 || i == 299 {
			if _, err := s.RecordTasks(ctx, p, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	for i, env := range envs {
		facts := timeline(env, fmt.Sprintf("w%d-%d-", seed, i))
		for j := range facts {
			facts[j].At = facts[j].At.AddDate(0, 0, 14*i-20) // some cross the month
		}
		rng.Shuffle(len(facts), func(a, b int) { facts[a], facts[b] = facts[b], facts[a] })
		for _, part := range [][]ledger.LifecycleFact{facts[:5], facts[5:]} {
			if _, err := s.RecordLifecycle(ctx, p, part); err != nil {
				return err
			}
		}
	}
	return nil
}

// rollupRows merges the pending deltas and returns every rollup row as text, in key order.
func rollupRows(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	merge(t, pool)
	var out []string
	for _, table := range []string{"metering_rollup_daily", "metering_rollup_monthly"} {
		rows, err := pool.Query(t.Context(), `SELECT r::text FROM `+table+` r ORDER BY r`)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		out = append(out, got...)
	}
	return out
}

func TestRollups_MergedWhileIngestRuns_AreTheLedgerSums(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	merges := make(chan int, 1)
	go func() {
		n := 0
		for ctx.Err() == nil {
			if _, ran, err := ledger.MergeRollups(ctx, pool); err == nil && ran {
				n++
			}
		}
		merges <- n
	}()
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := recordWorkload(ctx, s, p, uint64(10+w)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	cancel()
	require.Positive(t, <-merges)
	kept := rollupRows(t, pool)
	require.NoError(t, ledger.RebuildRollups(t.Context(), pool))
	require.Equal(t, kept, rollupRows(t, pool), "nothing lost or counted twice between pending and merged")
}

func TestRollups_AreTheLedgerSums(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	workload(t, s, p, 1)
	kept := rollupRows(t, pool)
	require.NotEmpty(t, kept)
	require.NoError(t, ledger.RebuildRollups(t.Context(), pool))
	require.Equal(t, kept, rollupRows(t, pool), "the rollups kept by ingest equal those rebuilt from the ledger")
}

func TestSummarize_AnyRangeAndGrouping_EqualsTheLedger(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	workload(t, s, p, 2)
	compareSummaries(t, pool) // every delta pending
	merge(t, pool)
	compareSummaries(t, pool) // every delta merged
	workload(t, s, p, 3)
	compareSummaries(t, pool) // some of each
}

// compareSummaries checks Summarize against the ledger for ranges and groupings that use the
// monthly rollup, the daily one, or both.
func compareSummaries(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ranges := [][2]time.Time{
		{time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 3, 31, 0, 0, 0, 0, time.UTC)}, // a whole month
		{time.Date(2025, 2, 20, 0, 0, 0, 0, time.UTC), time.Date(2025, 4, 3, 0, 0, 0, 0, time.UTC)}, // month and edges
		{time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 5, 31, 0, 0, 0, 0, time.UTC)}, // whole months
		{day(1), day(1)}, // one day
		{time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2024, 1, 9, 0, 0, 0, 0, time.UTC)}, // no usage
	}
	groupings := [][]ledger.Dimension{
		nil,
		{ledger.ByOrganization},
		{ledger.ByTenant, ledger.ByMonth},
		{ledger.ByModel, ledger.ByDay},
		{ledger.ByOrganization, ledger.ByTenant, ledger.ByModel},
	}
	for _, r := range ranges {
		for _, g := range groupings {
			for _, org := range []int64{0, 2} {
				q := ledger.Query{From: r[0], To: r[1], GroupBy: g, OrgID: org}
				got := summarize(t, pool, q)
				want := fromLedger(t, pool, q)
				require.Equal(t, want.Totals, got.Totals, "%+v", q)
				if r == ranges[1] && org == 0 {
					require.NotZero(t, got.Totals.Tasks, "the test has usage to compare")
					require.NotZero(t, got.Totals.ContainerMS)
					require.NotZero(t, got.Totals.UnpricedTokens)
				}
				if len(g) > 0 {
					require.Len(t, got.Groups, len(want.Groups), "%+v", q)
					for i := range want.Groups {
						require.Equal(t, want.Groups[i], got.Groups[i], "%+v group %d", q, i)
					}
				}
			}
		}
	}
}

// fromLedger answers q the slow way, from every ledger line in the range, for comparison.
func fromLedger(t *testing.T, pool *pgxpool.Pool, q ledger.Query) ledger.Summary {
	t.Helper()
	has := func(d ledger.Dimension) bool {
		for _, x := range q.GroupBy {
			if x == d {
				return true
			}
		}
		return false
	}
	rows, err := pool.Query(t.Context(), `
		SELECT org_id, env_id, provider, model, occurred_at, calls, tasks, task_status = 'failed', score,
			input_tokens, output_tokens, cached_tokens, total_tokens, container_ms, cost_micros
		FROM metering_ledger WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3 = 0 OR org_id = $3)`,
		q.From, q.To.AddDate(0, 0, 1), q.OrgID)
	require.NoError(t, err)
	groups := map[ledger.Group]*ledger.Group{}
	var sum ledger.Summary
	for rows.Next() {
		var g ledger.Group
		var at time.Time
		var failed *bool
		var score *float64
		var cost *int64
		var tasks int16
		require.NoError(t, rows.Scan(&g.OrgID, &g.EnvID, &g.Provider, &g.Model, &at, &g.Calls, &tasks, &failed, &score,
			&g.InputTokens, &g.OutputTokens, &g.CachedTokens, &g.TotalTokens, &g.ContainerMS, &cost))
		g.Tasks = int64(tasks)
		if failed != nil && *failed {
			g.FailedTasks = 1
		}
		if score != nil {
			g.ScoreSum, g.ScoreCount = *score, 1
		}
		if cost != nil {
			g.Cost = pricing.Micros(*cost)
		} else {
			g.UnpricedCalls, g.UnpricedTokens = g.Calls, g.TotalTokens
		}
		key := ledger.Group{}
		if has(ledger.ByOrganization) || has(ledger.ByTenant) {
			key.OrgID = g.OrgID
		}
		if has(ledger.ByTenant) {
			key.EnvID = g.EnvID
		}
		if has(ledger.ByModel) {
			key.Provider, key.Model = g.Provider, g.Model
		}
		if has(ledger.ByDay) {
			key.Period = time.Date(at.UTC().Year(), at.UTC().Month(), at.UTC().Day(), 0, 0, 0, 0, time.UTC)
		}
		if has(ledger.ByMonth) {
			key.Period = time.Date(at.UTC().Year(), at.UTC().Month(), 1, 0, 0, 0, 0, time.UTC)
		}
		p, ok := groups[key]
		if !ok {
			k := key
			p = &k
			groups[key] = p
		}
		ledger.AddTotals(&p.Totals, g.Totals)
		ledger.AddTotals(&sum.Totals, g.Totals)
	}
	require.NoError(t, rows.Err())
	for _, g := range groups {
		sum.Groups = append(sum.Groups, *g)
	}
	ledger.SortGroups(sum.Groups)
	return sum
}
