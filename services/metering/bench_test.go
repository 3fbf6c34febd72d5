package metering_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// The benchmarks run on the test harness's PostgreSQL, which does not fsync. That flatters
// the raw baseline more than the ledger: a commit costs the same to both, and is a larger
// share of the cheaper raw copy.

const (
	benchBatch   = 500 // events per transaction, the default metering.batch-size
	benchTenants = 200
	benchOrgs    = 20
)

var benchModels = []struct{ provider, model string }{
	{"anthropic", "claude-sonnet-4-20250514"},
	{"anthropic", "claude-haiku-4-5"},
	{"openai", "gpt-4o-2024-08-06"},
	{"openai", "gpt-4o-mini"},
}

// benchTasks makes n task usages of three lines each (two agents and a synthesis), as a busy
// platform's stream delivers them: in the order they finished, ten a second from 1 March 2025,
// from 200 tenants in 20 organizations, each tenant running its configured model for nine
// tasks in ten and one of the three others for the tenth.
func benchTasks(n int, seed uint64) []ledger.TaskUsage {
	rng := rand.New(rand.NewPCG(seed, 1))
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	out := make([]ledger.TaskUsage, n)
	for i := range out {
		env := int64(1 + rng.IntN(benchTenants))
		m := benchModels[int(env)%len(benchModels)]
		if rng.IntN(10) == 0 {
			m = benchModels[rng.IntN(len(benchModels))]
		}
		score := float64(rng.IntN(101))
		var agents []events.AgentUsage
		var u events.Usage
		for _, agent := range []string{"A", "B", "synthesis"} {
			in := 500 + rng.Int64N(4000)
			a := events.AgentUsage{Agent: agent, Provider: m.provider, Model: m.model, Calls: 1 + rng.Int64N(3),
				Usage: events.Usage{InputTokens: in, OutputTokens: rng.Int64N(1500), CachedTokens: rng.Int64N(in / 2)}}
			a.TotalTokens = a.InputTokens + a.OutputTokens
			agents = append(agents, a)
			u = u.Add(a.Usage)
		}
		id := fmt.Sprintf("%d-%08d", seed, i)
		out[i] = ledger.TaskUsage{EventID: events.NewID(), TaskID: "task-" + id, EnvID: env, OrgID: env%benchOrgs + 1,
			Score: &score, FinishedAt: start.Add(time.Duration(i) * 100 * time.Millisecond), Agents: agents, Usage: u}
	}
	return out
}

func chunks[T any](s []T, n int) [][]T {
	var out [][]T
	for len(s) > 0 {
		k := min(n, len(s))
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}

// ledgerColumns are the columns of a ledger row, in table order, for the raw copy.
var ledgerColumns = []string{"event_id", "line", "kind", "env_id", "org_id", "task_id", "occurred_at", "ended_at",
	"provider", "model", "agent", "calls", "tasks", "task_status", "score", "input_tokens", "output_tokens",
	"cached_tokens", "total_tokens", "container_ms", "price_version_id", "cost_micros", "recorded_at"}

// ledgerRows reads back every row of the ledger, per event batch, for the raw copy.
func ledgerRows(b *testing.B, pool *pgxpool.Pool, batches [][]ledger.TaskUsage) [][][]any {
	b.Helper()
	out := make([][][]any, len(batches))
	for i, batch := range batches {
		ids := make([]string, len(batch))
		for j, u := range batch {
			ids[j] = u.EventID
		}
		rows, err := pool.Query(context.Background(), `SELECT `+join(ledgerColumns)+` FROM metering_ledger WHERE event_id = ANY($1)`, ids)
		require.NoError(b, err)
		for rows.Next() {
			v, err := rows.Values()
			require.NoError(b, err)
			out[i] = append(out[i], v)
		}
		require.NoError(b, rows.Err())
	}
	return out
}

func join(cols []string) string {
	s := ""
	for i, c := range cols {
		if i > 0 {
			s += ", "
		}
		s += c
	}
	return s
}

// mergeLast merges whatever rollup deltas are pending.
func mergeLast(b *testing.B, pool *pgxpool.Pool) {
	b.Helper()
	for {
		_, ran, err := ledger.MergeRollups(context.Background(), pool)
		require.NoError(b, err)
		if ran {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// parallel runs op(i) for i in [0, n) on w workers and returns the elapsed time.
func parallel(b *testing.B, w, n int, op func(i int) error) time.Duration {
	b.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	start := time.Now()
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := op(i); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(b, firstErr)
	return time.Since(start)
}

// BenchmarkLedgerIngest measures ledger rows per second recorded by Store.RecordTasks in
// transactions of benchBatch events (three rows each): the unique event and task keys checked,
// every row priced, the rollup deltas appended, all in the transaction; and the merges of the
// deltas into the daily and monthly rollups that run beside it. Beside it, from the same run: a
// pgx CopyFrom of the very same rows, batch for batch, each in its own transaction, into a bare
// table (the ledger's columns, no index, no key), and the same batches recorded a second time
// (all duplicates). An op is one batch. Goal: ledger ≥ 0.5× raw copy.
func BenchmarkLedgerIngest(b *testing.B) {
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			ctx := context.Background()
			scratch, db := pgtest.NewDB(b), pgtest.NewDB(b)
			tasks := benchTasks(b.N*benchBatch, uint64(b.N))
			batches := chunks(tasks, benchBatch)

			// The raw rows are the ledger's own: recorded once in a scratch database and read back.
			p, err := ledger.RegisterPrices(ctx, scratch.Pool, pricing.Default())
			require.NoError(b, err)
			for _, batch := range batches {
				_, err := ledger.NewStore(scratch.Pool).RecordTasks(ctx, p, batch)
				require.NoError(b, err)
			}
			raw := ledgerRows(b, scratch.Pool, batches)
			lines := 0
			for _, r := range raw {
				lines += len(r)
			}

			pool := db.Pool
			_, err = pool.Exec(ctx, `CREATE TABLE bench_raw_ledger (LIKE metering_ledger)`)
			require.NoError(b, err)
			p, err = ledger.RegisterPrices(ctx, pool, pricing.Default())
			require.NoError(b, err)
			store := ledger.NewStore(pool)

			// Raw copies and ledger batches alternate in rounds of one batch per writer, so the two
			// rates see the same machine: other work on it slows both alike, and the ratio of the
			// median rounds, the headline, shrugs off bursts of it. The merges of the pending
			// rollup deltas are the ledger's work too: as in the service, one runs after each
			// second of ingest, and the last one after the last batch; their time is added to
			// the ledger's, spread over its rounds.
			var rawRounds, ledgerRounds []time.Duration
			var mergeTime, sinceMerge time.Duration
			b.ResetTimer()
			for first := 0; first < len(batches); first += writers {
				round := min(writers, len(batches)-first)
				rawRounds = append(rawRounds, parallel(b, round, round, func(i int) error {
					return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
						_, err := tx.CopyFrom(ctx, pgx.Identifier{"bench_raw_ledger"}, ledgerColumns, pgx.CopyFromRows(raw[first+i]))
						return err
					})
				}))
				took := parallel(b, round, round, func(i int) error {
					batch := batches[first+i]
					res, err := store.RecordTasks(ctx, p, batch)
					if err == nil && res.Recorded != len(batch) {
						err = fmt.Errorf("batch %d: recorded %d of %d", first+i, res.Recorded, len(batch))
					}
					return err
				})
				ledgerRounds = append(ledgerRounds, took)
				if sinceMerge += took; sinceMerge >= time.Second || first+round == len(batches) {
					start := time.Now()
					mergeLast(b, pool)
					mergeTime += time.Since(start)
					sinceMerge = 0
				}
			}
			dupTime := parallel(b, writers, len(batches), func(i int) error {
				res, err := store.RecordTasks(ctx, p, batches[i])
				if err == nil && res.Duplicates != len(batches[i]) {
					err = fmt.Errorf("batch %d: %d duplicates of %d", i, res.Duplicates, len(batches[i]))
				}
				return err
			})
			b.StopTimer()

			var got int64
			require.NoError(b, pool.QueryRow(ctx, `SELECT count(*) FROM metering_ledger`).Scan(&got))
			require.EqualValues(b, lines, got, "every row once")

			rawTime, ledgerTime := sum(rawRounds), sum(ledgerRounds)+mergeTime
			mergePerRound := mergeTime / time.Duration(len(ledgerRounds))
			medianRatio := float64(median(rawRounds)) / float64(median(ledgerRounds)+mergePerRound)
			rawRate := float64(lines) / rawTime.Seconds()
			ingestRate := float64(lines) / ledgerTime.Seconds()
			dupRate := float64(len(tasks)) / dupTime.Seconds()
			b.ReportMetric(rawRate, "raw_copy_rows/s")
			b.ReportMetric(ingestRate, "ledger_rows/s")
			b.ReportMetric(float64(len(tasks))/ledgerTime.Seconds(), "ledger_events/s")
			b.ReportMetric(dupRate, "duplicate_events/s")
			b.ReportMetric(medianRatio, "ledger/raw")
			b.ReportMetric(ingestRate/rawRate, "ledger/raw_total")
			b.Logf("%d writers, %d events = %d rows in batches of %d events: raw CopyFrom %.0f rows/s, ledger %.0f rows/s (%.0f events/s, %.0f%% of it merging rollups): "+
				"%.2fx raw by the median round, %.2fx by the totals (goal ≥ 0.5x); all-duplicate batches %.0f events/s",
				writers, len(tasks), lines, benchBatch, rawRate, ingestRate, float64(len(tasks))/ledgerTime.Seconds(),
				100*mergeTime.Seconds()/ledgerTime.Seconds(), medianRatio, ingestRate/rawRate, dupRate)
		})
	}
}

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkIngestThroughJetStream measures the whole path, for context: events published to
// CONVERGE_RESULTS beforehand, then pulled, decoded, recorded and acknowledged by one
// metering replica with the default batch size. An op is one batch of events.
func BenchmarkIngestThroughJetStream(b *testing.B) {
	p := newPlatform(b)
	tasks := benchTasks(b.N*benchBatch, 99)
	var futures []jetstream.PubAckFuture
	wait := func() {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
		futures = futures[:0]
	}
	// The converger's records of the tasks, which metering asks for before it bills them.
	for _, u := range tasks {
		p.insertTask(u.TaskID, u.EnvID, u.OrgID, "completed", u.Usage)
	}
	for _, u := range tasks {
		env, err := events.NewEnvelope("bench", events.TypeConvergeCompleted, u.TaskID, "", events.ConvergeCompleted{
			TaskID: u.TaskID, EnvID: u.EnvID, OrgID: u.OrgID, ConvergenceScore: *u.Score, Usage: u.Usage, Agents: u.Agents, FinishedAt: u.FinishedAt})
		require.NoError(b, err)
		data, err := json.Marshal(env)
		require.NoError(b, err)
		f, err := p.JS.PublishMsgAsync(&nats.Msg{Subject: events.SubjectConvergeCompleted, Data: data, Header: nats.Header{jetstream.MsgIDHeader: {env.ID}}})
		require.NoError(b, err)
		if futures = append(futures, f); len(futures) == 1000 {
			wait()
		}
	}
	wait()

	b.ResetTimer()
	start := time.Now()
	cfg := testConfig()
	cfg.BatchSize, cfg.AckWait = benchBatch, 30*time.Second
	in := p.start(cfg, nil)
	p.waitCount(int64(len(tasks)), `SELECT count(*) FROM metering_ledger WHERE line = 0`)
	elapsed := time.Since(start)
	b.StopTimer()
	in.Stop(b)
	rate := float64(len(tasks)) / elapsed.Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(3*rate, "ledger_rows/s")
	b.Logf("%d events (%d rows) pulled from JetStream, recorded and acknowledged in %s: %.0f events/s, %.0f rows/s",
		len(tasks), 3*len(tasks), elapsed.Round(time.Millisecond), rate, 3*rate)
}

// BenchmarkOrgMonthSummary measures the latency of one organization's summary for a month, by
// tenant, as GET /api/v1/usage?orgId=&from=&to=&groupBy=tenant asks it, with 10 thousand and
// with 1 million ledger rows (over three months, 200 tenants in 20 organizations, 4 models).
// For comparison it also times the same answer summed from the ledger itself at 1 million
// rows. An op is one summary at each size. Goal: 1M ≤ 2× 10k.
//
// The summary reads the monthly rollup of the organization's tenants (10 tenants × 4 models
// here) whatever the size of the ledger, which is why the two sizes cost the same.
func BenchmarkOrgMonthSummary(b *testing.B) {
	ctx := context.Background()
	sizes := []int{10_000, 1_000_000}
	pools := make([]*pgxpool.Pool, len(sizes))
	for i, n := range sizes {
		pools[i] = pgtest.New(b)
		fillLedger(b, pools[i], n)
	}
	q := ledger.Query{
		From:    time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC),
		To:      time.Date(2025, 3, 31, 0, 0, 0, 0, time.UTC),
		OrgID:   5,
		GroupBy: []ledger.Dimension{ledger.ByTenant},
		Now:     time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
	}
	naive := `SELECT env_id, sum(calls), sum(tasks), sum(input_tokens), sum(output_tokens), sum(cached_tokens),
			sum(total_tokens), sum(container_ms), sum(cost_micros), avg(score)
		FROM metering_ledger WHERE org_id = $1 AND occurred_at >= $2 AND occurred_at < $3 GROUP BY env_id`
	for _, pool := range pools { // warm: plans prepared, pages cached
		for range 3 {
			_, err := ledger.Summarize(ctx, pool, q)
			require.NoError(b, err)
		}
	}
	sum, err := ledger.Summarize(ctx, pools[1], q)
	require.NoError(b, err)
	require.Len(b, sum.Groups, benchTenants/benchOrgs, "every tenant of the organization")

	// The databases are filled once; the sub-benchmark is run as often as the framework likes.
	b.Run("month", func(b *testing.B) {
		var took [2]time.Duration
		for range b.N {
			for i, pool := range pools {
				start := time.Now()
				_, err := ledger.Summarize(ctx, pool, q)
				took[i] += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		scanStart := time.Now()
		const scans = 5
		for range scans {
			rows, err := pools[1].Query(ctx, naive, q.OrgID, q.From, q.To.AddDate(0, 0, 1))
			require.NoError(b, err)
			rows.Close()
			require.NoError(b, rows.Err())
		}
		scan := time.Since(scanStart) / scans

		small, large := took[0]/time.Duration(b.N), took[1]/time.Duration(b.N)
		b.ReportMetric(float64(small.Microseconds())/1000, "ms_at_10k")
		b.ReportMetric(float64(large.Microseconds())/1000, "ms_at_1M")
		b.ReportMetric(float64(large)/float64(small), "1M/10k")
		b.ReportMetric(float64(scan.Microseconds())/1000, "ledger_scan_ms_at_1M")
		b.Logf("a month's summary of one organization by tenant, %d times: %s at 10k ledger rows, %s at 1M = %.2fx (goal ≤ 2x); summing the 1M-row ledger instead takes %s",
			b.N, small, large, float64(large)/float64(small), scan)
	})
}

// fillLedger writes n ledger rows straight into the ledger with generate_series (three lines
// per task, January to March 2025), then builds the rollups from them.
func fillLedger(b *testing.B, pool *pgxpool.Pool, n int) {
	b.Helper()
	ctx := context.Background()
	p, err := ledger.RegisterPrices(ctx, pool, pricing.Default())
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `
		INSERT INTO metering_ledger (event_id, line, kind, env_id, org_id, task_id, occurred_at, provider, model,
			agent, calls, tasks, task_status, score, input_tokens, output_tokens, cached_tokens, total_tokens,
			price_version_id, cost_micros)
		SELECT 'ev-' || t, l, 'task', env, env % $3 + 1, 'task-' || t,
			timestamptz '2025-01-01 00:00:00+00' + (t * 7919 % 7776000) * interval '1 second',
			(ARRAY['anthropic', 'anthropic', 'openai', 'openai'])[m + 1],
			(ARRAY['claude-sonnet-4-20250514', 'claude-haiku-4-5', 'gpt-4o-2024-08-06', 'gpt-4o-mini'])[m + 1],
			(ARRAY['A', 'B', 'synthesis'])[l + 1], 1 + l,
			CASE WHEN l = 0 THEN 1 ELSE 0 END, CASE WHEN l = 0 THEN 'completed' END,
			CASE WHEN l = 0 THEN (t % 101)::float8 END,
			1000 + t % 3000, t % 1500, t % 400, 1000 + t % 3000 + t % 1500, $4, (t % 9000) + 100
		FROM generate_series(0, $1::int8 - 1) AS g(i),
			LATERAL (SELECT i / 3 AS t, i % 3 AS l) x,
			LATERAL (SELECT 1 + (t * 31) % $2 AS env, (t * 17) % 4 AS m) y`,
		n, benchTenants, benchOrgs, p.VersionID)
	require.NoError(b, err)
	require.NoError(b, ledger.RebuildRollups(ctx, pool))
	_, err = pool.Exec(ctx, `VACUUM ANALYZE metering_ledger, metering_rollup_daily, metering_rollup_monthly`)
	require.NoError(b, err)
}
