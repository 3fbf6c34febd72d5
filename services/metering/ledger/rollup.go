package ledger

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// rollupKey identifies a rollup row: a UTC day or month, a tenant, a provider and a model.
type rollupKey struct {
	period   time.Time
	envID    int64
	provider string
	model    string
}

// rollupDelta is what a transaction adds to one rollup row.
type rollupDelta struct {
	orgID          int64
	calls          int64
	tasks          int64
	failedTasks    int64
	scoreSum       float64
	scoreCount     int64
	input          int64
	output         int64
	cached         int64
	total          int64
	containerMS    int64
	cost           int64
	unpricedCalls  int64
	unpricedTokens int64
}

func (d *rollupDelta) addLine(l *line) {
	d.orgID = l.orgID
	d.calls += l.calls
	d.tasks += int64(l.tasks)
	if l.status == statusFailed {
		d.failedTasks++
	}
	if l.hasScore {
		d.scoreSum += l.score
		d.scoreCount++
	}
	d.input += l.input
	d.output += l.output
	d.cached += l.cached
	d.total += l.total
	d.containerMS += l.containerMS
	if l.priced {
		d.cost += l.cost
	} else {
		d.unpricedCalls += l.calls
		d.unpricedTokens += l.total
	}
}

func (d *rollupDelta) merge(o rollupDelta) {
	d.orgID = o.orgID
	d.calls += o.calls
	d.tasks += o.tasks
	d.failedTasks += o.failedTasks
	d.scoreSum += o.scoreSum
	d.scoreCount += o.scoreCount
	d.input += o.input
	d.output += o.output
	d.cached += o.cached
	d.total += o.total
	d.containerMS += o.containerMS
	d.cost += o.cost
	d.unpricedCalls += o.unpricedCalls
	d.unpricedTokens += o.unpricedTokens
}

// rollups accumulates the deltas of one transaction, per UTC day, tenant, provider and model.
type rollups struct {
	daily map[rollupKey]*rollupDelta
}

func newRollups() *rollups {
	return &rollups{daily: map[rollupKey]*rollupDelta{}}
}

// add adds a ledger line to the day it occurred on.
func (r *rollups) add(l *line) {
	k := rollupKey{period: utcDay(l.occurredAt), envID: l.envID, provider: l.provider, model: l.model}
	delta(r.daily, k).addLine(l)
}

// addDelta adds d, rather than a line's own counts, to the day of l.
func (r *rollups) addDelta(l *line, d rollupDelta) {
	k := rollupKey{period: utcDay(l.occurredAt), envID: l.envID, provider: l.provider, model: l.model}
	delta(r.daily, k).merge(d)
}

func delta(m map[rollupKey]*rollupDelta, k rollupKey) *rollupDelta {
	d, ok := m[k]
	if !ok {
		d = &rollupDelta{}
		m[k] = d
	}
	return d
}

// write appends the deltas to metering_rollup_pending: a COPY into a table with no index and
// no key, which no other transaction waits on. MergeRollups moves them into the rollups.
func (r *rollups) write(ctx context.Context, tx pgx.Tx) error {
	if len(r.daily) == 0 {
		return nil
	}
	var c rollupColumns
	for k, d := range r.daily {
		c.add(k, d)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"metering_rollup_pending"}, rollupColumnNames, &c); err != nil {
		return fmt.Errorf("append rollup deltas: %w", err)
	}
	return nil
}

var rollupColumnNames = []string{"day", "env_id", "provider", "model", "org_id", "calls", "tasks",
	"failed_tasks", "score_sum", "score_count", "input_tokens", "output_tokens", "cached_tokens",
	"total_tokens", "container_ms", "cost_micros", "unpriced_calls", "unpriced_tokens"}

// rollupColumns holds rollup deltas column by column, and is the source of their COPY.
type rollupColumns struct {
	period                                                []time.Time
	envID                                                 []int64
	provider, model                                       []string
	orgID, calls, tasks, failedTasks                      []int64
	scoreSum                                              []float64
	scoreCount, input, output, cached, total, containerMS []int64
	cost, unpricedCalls, unpricedTokens                   []int64
	cur                                                   int
	row                                                   []any
}

func (c *rollupColumns) add(k rollupKey, d *rollupDelta) {
	c.period = append(c.period, k.period)
	c.envID = append(c.envID, k.envID)
	c.provider = append(c.provider, k.provider)
	c.model = append(c.model, k.model)
	c.orgID = append(c.orgID, d.orgID)
	c.calls = append(c.calls, d.calls)
	c.tasks = append(c.tasks, d.tasks)
	c.failedTasks = append(c.failedTasks, d.failedTasks)
	c.scoreSum = append(c.scoreSum, d.scoreSum)
	c.scoreCount = append(c.scoreCount, d.scoreCount)
	c.input = append(c.input, d.input)
	c.output = append(c.output, d.output)
	c.cached = append(c.cached, d.cached)
	c.total = append(c.total, d.total)
	c.containerMS = append(c.containerMS, d.containerMS)
	c.cost = append(c.cost, d.cost)
	c.unpricedCalls = append(c.unpricedCalls, d.unpricedCalls)
	c.unpricedTokens = append(c.unpricedTokens, d.unpricedTokens)
}

// Next, Values and Err make rollupColumns a pgx.CopyFromSource.
func (c *rollupColumns) Next() bool { c.cur++; return c.cur <= len(c.period) }

func (c *rollupColumns) Values() ([]any, error) {
	i := c.cur - 1 // pgx encodes a row before it asks for the next: one slice serves all
	c.row = append(c.row[:0], c.period[i], c.envID[i], c.provider[i], c.model[i], c.orgID[i], c.calls[i], c.tasks[i],
		c.failedTasks[i], c.scoreSum[i], c.scoreCount[i], c.input[i], c.output[i], c.cached[i], c.total[i],
		c.containerMS[i], c.cost[i], c.unpricedCalls[i], c.unpricedTokens[i])
	return c.row, nil
}

func (c *rollupColumns) Err() error { return nil }

// rollupSums are the rollup columns a merge adds up.
const rollupSums = `calls, tasks, failed_tasks, score_sum, score_count, input_tokens, output_tokens,
	cached_tokens, total_tokens, container_ms, cost_micros, unpriced_calls, unpriced_tokens`

// groupedSums sums each rollup column of a GROUP BY, after the organization.
const groupedSums = `max(org_id) AS org_id, sum(calls) AS calls, sum(tasks) AS tasks,
	sum(failed_tasks) AS failed_tasks, sum(score_sum) AS score_sum, sum(score_count) AS score_count,
	sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
	sum(cached_tokens) AS cached_tokens, sum(total_tokens) AS total_tokens,
	sum(container_ms) AS container_ms, sum(cost_micros) AS cost_micros,
	sum(unpriced_calls) AS unpriced_calls, sum(unpriced_tokens) AS unpriced_tokens`

// mergeSet adds the excluded row's sums to the existing row's.
const mergeSet = `
	calls = r.calls + excluded.calls,
	tasks = r.tasks + excluded.tasks,
	failed_tasks = r.failed_tasks + excluded.failed_tasks,
	score_sum = r.score_sum + excluded.score_sum,
	score_count = r.score_count + excluded.score_count,
	input_tokens = r.input_tokens + excluded.input_tokens,
	output_tokens = r.output_tokens + excluded.output_tokens,
	cached_tokens = r.cached_tokens + excluded.cached_tokens,
	total_tokens = r.total_tokens + excluded.total_tokens,
	container_ms = r.container_ms + excluded.container_ms,
	cost_micros = r.cost_micros + excluded.cost_micros,
	unpriced_calls = r.unpriced_calls + excluded.unpriced_calls,
	unpriced_tokens = r.unpriced_tokens + excluded.unpriced_tokens`

// MergeRollups moves the pending rollup deltas into the daily and monthly rollups in one
// transaction, so a reader sees every delta either pending or merged, never both nor neither.
// Deltas appended meanwhile stay pending for the next merge. One merge runs at a time across
// processes: a call that finds another running returns at once with ran false. rows is the
// number of pending rows merged.
func MergeRollups(ctx context.Context, db DB) (rows int64, ran bool, err error) {
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtext('metering_rollup_merge'))`).Scan(&ran); err != nil {
			return fmt.Errorf("merge lock: %w", err)
		}
		if !ran {
			return nil
		}
		// The deltas are summed per day once; the months are summed from those sums.
		return tx.QueryRow(ctx, `
			WITH moved AS (
				DELETE FROM metering_rollup_pending RETURNING *
			), days AS (
				SELECT day, env_id, provider, model, `+groupedSums+`
				FROM moved GROUP BY day, env_id, provider, model
			), daily AS (
				INSERT INTO metering_rollup_daily AS r (day, env_id, provider, model, org_id, `+rollupSums+`)
				SELECT * FROM days
				ON CONFLICT (day, env_id, provider, model) DO UPDATE SET `+mergeSet+`
			), monthly AS (
				INSERT INTO metering_rollup_monthly AS r (month, env_id, provider, model, org_id, `+rollupSums+`)
				SELECT date_trunc('month', day)::date, env_id, provider, model, `+groupedSums+`
				FROM days GROUP BY 1, env_id, provider, model
				ON CONFLICT (month, env_id, provider, model) DO UPDATE SET `+mergeSet+`
			)
			SELECT count(*) FROM moved`).Scan(&rows)
	})
	if err != nil {
		return 0, false, fmt.Errorf("merge rollups: %w", err)
	}
	return rows, ran, nil
}

// unpricedFlags accumulates the usage of unpriced models in a transaction.
type unpricedFlags map[[2]string]*unpricedCount

type unpricedCount struct{ lines, calls, tokens int64 }

func (u unpricedFlags) add(l *line) {
	k := [2]string{l.provider, l.model}
	f, ok := u[k]
	if !ok {
		f = &unpricedCount{}
		u[k] = f
	}
	f.lines++
	f.calls += l.calls
	f.tokens += l.total
}

// queue queues the upsert of the flags in key order.
func (u unpricedFlags) queue(b *pgx.Batch) {
	if len(u) == 0 {
		return
	}
	keys := make([][2]string, 0, len(u))
	for k := range u {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1])) })
	var providers, models []string
	var lines, calls, tokens []int64
	for _, k := range keys {
		f := u[k]
		providers, models = append(providers, k[0]), append(models, k[1])
		lines, calls, tokens = append(lines, f.lines), append(calls, f.calls), append(tokens, f.tokens)
	}
	b.Queue(`
		INSERT INTO metering_unpriced_models AS u (provider, model, first_seen_at, last_seen_at, lines, calls, total_tokens)
		SELECT p, m, now(), now(), l, c, t FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) AS x(p, m, l, c, t)
		ON CONFLICT (provider, model) DO UPDATE SET
			last_seen_at = now(),
			lines = u.lines + excluded.lines,
			calls = u.calls + excluded.calls,
			total_tokens = u.total_tokens + excluded.total_tokens`,
		providers, models, lines, calls, tokens)
}

// sendBatch sends b on tx and reads every result.
func sendBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write ledger lines and rollups: %w", err)
	}
	return nil
}

// RebuildRollups recomputes every rollup row from the ledger, pending deltas included, in one
// transaction that holds ingest off meanwhile. The rollups are the ledger's sums by construction; this is
// the repair for when they are not (a hand edit of the ledger), and how a bulk-loaded ledger
// gets its rollups.
func RebuildRollups(ctx context.Context, db DB) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// The ledger is locked too, so no line is recorded between reading it and replacing
		// the rollups; ingest waits for the rebuild.
		if _, err := tx.Exec(ctx, `LOCK TABLE metering_ledger, metering_rollup_pending, metering_rollup_daily, metering_rollup_monthly IN EXCLUSIVE MODE`); err != nil {
			return fmt.Errorf("lock rollups: %w", err)
		}
		if _, err := tx.Exec(ctx, `TRUNCATE metering_rollup_pending, metering_rollup_daily, metering_rollup_monthly`); err != nil {
			return fmt.Errorf("truncate rollups: %w", err)
		}
		for _, q := range []struct{ table, period, expr string }{
			{"metering_rollup_daily", "day", `(occurred_at AT TIME ZONE 'UTC')::date`},
			{"metering_rollup_monthly", "month", `date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date`},
		} {
			_, err := tx.Exec(ctx, fmt.Sprintf(`
				INSERT INTO %[1]s (%[2]s, env_id, provider, model, org_id, calls, tasks, failed_tasks,
					score_sum, score_count, input_tokens, output_tokens, cached_tokens, total_tokens,
					container_ms, cost_micros, unpriced_calls, unpriced_tokens)
				SELECT %[3]s, env_id, provider, model, max(org_id), sum(calls), sum(tasks),
					count(*) FILTER (WHERE task_status = 'failed'), coalesce(sum(score), 0), count(score),
					sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(total_tokens),
					sum(container_ms), coalesce(sum(cost_micros), 0),
					coalesce(sum(calls) FILTER (WHERE cost_micros IS NULL), 0),
					coalesce(sum(total_tokens) FILTER (WHERE cost_micros IS NULL), 0)
				FROM metering_ledger
				GROUP BY 1, env_id, provider, model`, q.table, q.period, q.expr))
			if err != nil {
				return fmt.Errorf("rebuild %s: %w", q.table, err)
			}
		}
		return nil
	})
}
