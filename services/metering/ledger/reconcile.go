package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/pkg/events"
)

// ReconcileOptions say which period to reconcile and whether to repair it.
type ReconcileOptions struct {
	// From and To are the first and last UTC day of the period, inclusive, as midnights.
	// Tasks belong to the day they finished.
	From, To time.Time
	// Repair writes what the ledger lacks: missing tasks, adjustments to the converger's
	// counts, and prices for usage whose model the current prices now cover.
	Repair bool
}

// Validate says what is wrong with o.
func (o ReconcileOptions) Validate() error {
	return Query{From: o.From, To: o.To}.Validate()
}

// TaskGap is a task on which the ledger and the converger's records disagree.
type TaskGap struct {
	TaskID     string       `json:"taskId"`
	EnvID      int64        `json:"envId"`
	OrgID      int64        `json:"orgId"`
	Status     string       `json:"status,omitempty"` // the converger's; empty for an orphan
	FinishedAt time.Time    `json:"finishedAt"`
	Task       events.Usage `json:"task"`   // the converger's record; none for an orphan
	Ledger     events.Usage `json:"ledger"` // the ledger's sum
	Repaired   bool         `json:"repaired"`
}

// MarshalJSON writes the gap with task null for an orphan, which has no record to show.
func (g TaskGap) MarshalJSON() ([]byte, error) {
	type gap TaskGap // without this method
	var task *events.Usage
	if g.Status != "" {
		task = &g.Task
	}
	return json.Marshal(struct {
		gap
		Task *events.Usage `json:"task"`
	}{gap(g), task})
}

// Report is the outcome of a reconciliation.
type Report struct {
	From   time.Time `json:"-"`
	To     time.Time `json:"-"`
	Repair bool      `json:"repair"`
	// TasksChecked counts the converger's finished tasks in the period (completed, failed or
	// cancelled: each has a result event); Matched those the ledger holds with the same token
	// counts.
	TasksChecked int `json:"tasksChecked"`
	Matched      int `json:"matched"`
	// Missing are finished tasks with no ledger entry; Mismatched are held with other counts.
	Missing    []TaskGap `json:"missing"`
	Mismatched []TaskGap `json:"mismatched"`
	// Orphaned are tasks the ledger holds that the converger has no record of. They are
	// reported, never removed: the ledger took them from events.
	Orphaned []TaskGap `json:"orphaned"`
	// Unpriced is the period's usage that has no price.
	Unpriced UnpricedUsage `json:"unpriced"`
}

// UnpricedUsage counts unpriced ledger lines, and those a repair priced.
type UnpricedUsage struct {
	Lines          int64 `json:"lines"`
	TotalTokens    int64 `json:"totalTokens"`
	RepricedLines  int64 `json:"repricedLines"`
	RepricedTokens int64 `json:"repricedTokens"`
}

// MarshalJSON writes the report with its days as YYYY-MM-DD and whether it is clean.
func (r Report) MarshalJSON() ([]byte, error) {
	type report Report // without this method
	return json.Marshal(struct {
		From  string `json:"from"`
		To    string `json:"to"`
		Clean bool   `json:"clean"`
		report
	}{r.From.Format(time.DateOnly), r.To.Format(time.DateOnly), r.Clean(), report(r)})
}

// Clean reports whether the ledger and the converger's records agree and every line of the
// period is priced, after any repair.
func (r Report) Clean() bool {
	for _, gaps := range [][]TaskGap{r.Missing, r.Mismatched} {
		for _, g := range gaps {
			if !g.Repaired {
				return false
			}
		}
	}
	return len(r.Orphaned) == 0 && r.Unpriced.Lines == r.Unpriced.RepricedLines
}

// reconcileMargin widens the ledger side of the comparison: a task's ledger lines carry the
// finish time of its event, which may differ slightly from the converger's record.
const reconcileMargin = 24 * time.Hour

// TaskRecords is the converger's record of finished tasks, which the ledger is reconciled with.
type TaskRecords interface {
	// Finished calls page with the tasks that finished in [from, end), a page at a time.
	Finished(ctx context.Context, from, end time.Time, page func([]events.FinishedTask) error) error
	// Known returns those of ids that name a task the converger has a record of.
	Known(ctx context.Context, ids []string) ([]string, error)
}

// Reconcile compares, for the tasks that finished in the period, the converger's records
// (records) with the ledger, and with o.Repair writes what the ledger lacks:
//
//   - a missing task is recorded from the converger's record, under event ID
//     "reconcile:<taskId>"; if its event arrives later, it is skipped as a conflict;
//   - a task with other token counts gets an adjustment line of the difference, priced at
//     the model of its first line, under an event ID derived from both counts, so running the
//     repair again writes nothing twice;
//   - unpriced usage whose model prices now covers is priced, and its rollups moved.
//
// Repairs are idempotent and safe beside a running ingest.
func Reconcile(ctx context.Context, db DB, records TaskRecords, prices Prices, o ReconcileOptions) (Report, error) {
	if err := o.Validate(); err != nil {
		return Report{}, err
	}
	from, end := o.From, o.To.AddDate(0, 0, 1)
	rep := Report{From: o.From, To: o.To, Repair: o.Repair, Missing: []TaskGap{}, Mismatched: []TaskGap{}, Orphaned: []TaskGap{}}

	tasks, candidates, err := compareTasks(ctx, db, records, from, end)
	if err != nil {
		return Report{}, err
	}
	var repairs []TaskUsage
	var missing, mismatched []int
	for i := range tasks {
		r := &tasks[i]
		rep.TasksChecked++
		switch {
		case !r.inLedger:
			rep.Missing = append(rep.Missing, r.gap)
			missing = append(missing, len(rep.Missing)-1)
			repairs = append(repairs, r.repair())
		case r.gap.Task != r.gap.Ledger:
			rep.Mismatched = append(rep.Mismatched, r.gap)
			mismatched = append(mismatched, len(rep.Mismatched)-1)
			repairs = append(repairs, r.adjustment())
		default:
			rep.Matched++
		}
	}
	if rep.Orphaned, err = orphans(ctx, records, candidates); err != nil {
		return Report{}, err
	}
	if rep.Unpriced, err = unpricedUsage(ctx, db, from, end); err != nil {
		return Report{}, err
	}
	if !o.Repair {
		return rep, nil
	}

	store := NewStore(db)
	const chunk = 500
	for i := 0; i < len(repairs); i += chunk {
		if _, err := store.RecordTasks(ctx, prices, repairs[i:min(i+chunk, len(repairs))]); err != nil {
			return Report{}, fmt.Errorf("repair tasks: %w", err)
		}
	}
	for _, i := range missing {
		rep.Missing[i].Repaired = true
	}
	for _, i := range mismatched {
		rep.Mismatched[i].Repaired = true
	}
	if err := reprice(ctx, db, prices, from, end, &rep.Unpriced); err != nil {
		return Report{}, err
	}
	return rep, nil
}

// taskRecord is one finished task with what the ledger holds for it.
type taskRecord struct {
	gap          TaskGap
	inLedger     bool
	score        *float64
	requestModel string // the model the task's request named
	agents       []events.AgentUsage
	// provider and model of the task's first ledger line, which adjustments are priced at.
	provider, model string
}

// compareTasks loads the converger's records of the tasks that finished in [from, end) into a
// temporary table and compares them with the ledger there. It also returns the candidate
// orphans: tasks the ledger counted in the period that are not among those records (a task the
// converger recorded as finishing just outside the period is one too, so orphans asks again).
func compareTasks(ctx context.Context, db DB, records TaskRecords, from, end time.Time) ([]taskRecord, []TaskGap, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `
		CREATE TEMPORARY TABLE reconcile_tasks (
			id            TEXT COLLATE "C" PRIMARY KEY,
			env_id        BIGINT NOT NULL,
			org_id        BIGINT NOT NULL,
			status        TEXT NOT NULL,
			finished_at   TIMESTAMPTZ NOT NULL,
			input_tokens  BIGINT NOT NULL,
			output_tokens BIGINT NOT NULL,
			cached_tokens BIGINT NOT NULL,
			total_tokens  BIGINT NOT NULL,
			score         DOUBLE PRECISION,
			model         TEXT NOT NULL,
			agents        JSON NOT NULL
		) ON COMMIT DROP`); err != nil {
		return nil, nil, fmt.Errorf("create the table of task records: %w", err)
	}
	err = records.Finished(ctx, from, end, func(page []events.FinishedTask) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"reconcile_tasks"},
			[]string{"id", "env_id", "org_id", "status", "finished_at", "input_tokens", "output_tokens", "cached_tokens",
				"total_tokens", "score", "model", "agents"},
			pgx.CopyFromSlice(len(page), func(i int) ([]any, error) {
				t := page[i]
				agents, err := json.Marshal(t.Agents)
				return []any{t.TaskID, t.EnvID, t.OrgID, t.Status, t.FinishedAt, t.Usage.InputTokens, t.Usage.OutputTokens,
					t.Usage.CachedTokens, t.Usage.TotalTokens, t.ConvergenceScore, t.Model, string(agents)}, err
			}))
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read the converger's task records: %w", err)
	}
	rows, err := tx.Query(ctx, `
		WITH l AS (
			SELECT task_id,
				sum(input_tokens)::int8 AS input_tokens, sum(output_tokens)::int8 AS output_tokens,
				sum(cached_tokens)::int8 AS cached_tokens, sum(total_tokens)::int8 AS total_tokens,
				max(provider) FILTER (WHERE kind = 'task' AND line = 0) AS provider,
				max(model) FILTER (WHERE kind = 'task' AND line = 0) AS model
			FROM metering_ledger
			WHERE kind IN ('task', 'adjustment') AND occurred_at >= $1 AND occurred_at < $2
			GROUP BY task_id
		)
		SELECT t.id, t.env_id, t.org_id, t.status, t.finished_at,
			t.input_tokens, t.output_tokens, t.cached_tokens, t.total_tokens,
			t.score, t.model, t.agents,
			l.task_id IS NOT NULL, coalesce(l.input_tokens, 0), coalesce(l.output_tokens, 0),
			coalesce(l.cached_tokens, 0), coalesce(l.total_tokens, 0),
			coalesce(l.provider, ''), coalesce(l.model, '')
		FROM reconcile_tasks t LEFT JOIN l ON l.task_id = t.id
		ORDER BY t.finished_at, t.id`,
		from.Add(-reconcileMargin), end.Add(reconcileMargin))
	if err != nil {
		return nil, nil, fmt.Errorf("compare tasks with the ledger: %w", err)
	}
	tasks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (taskRecord, error) {
		var r taskRecord
		var agents []byte
		g := &r.gap
		err := row.Scan(&g.TaskID, &g.EnvID, &g.OrgID, &g.Status, &g.FinishedAt,
			&g.Task.InputTokens, &g.Task.OutputTokens, &g.Task.CachedTokens, &g.Task.TotalTokens,
			&r.score, &r.requestModel, &agents,
			&r.inLedger, &g.Ledger.InputTokens, &g.Ledger.OutputTokens, &g.Ledger.CachedTokens, &g.Ledger.TotalTokens,
			&r.provider, &r.model)
		if err == nil {
			err = json.Unmarshal(agents, &r.agents)
		}
		g.FinishedAt = g.FinishedAt.UTC()
		return r, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("compare tasks with the ledger: %w", err)
	}
	rows, err = tx.Query(ctx, `
		SELECT l.task_id, min(l.env_id), min(l.org_id), min(l.occurred_at),
			sum(l.input_tokens)::int8, sum(l.output_tokens)::int8, sum(l.cached_tokens)::int8, sum(l.total_tokens)::int8
		FROM metering_ledger l
		WHERE l.kind IN ('task', 'adjustment') AND l.occurred_at >= $1 AND l.occurred_at < $2
			AND NOT EXISTS (SELECT 1 FROM reconcile_tasks t WHERE t.id = l.task_id)
		GROUP BY l.task_id
		ORDER BY min(l.occurred_at), l.task_id`, from, end)
	if err != nil {
		return nil, nil, fmt.Errorf("find ledger tasks without a record: %w", err)
	}
	candidates, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TaskGap, error) {
		var g TaskGap
		err := row.Scan(&g.TaskID, &g.EnvID, &g.OrgID, &g.FinishedAt,
			&g.Ledger.InputTokens, &g.Ledger.OutputTokens, &g.Ledger.CachedTokens, &g.Ledger.TotalTokens)
		g.FinishedAt = g.FinishedAt.UTC()
		return g, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("find ledger tasks without a record: %w", err)
	}
	return tasks, candidates, tx.Commit(ctx)
}

// repair is the usage a missing task is recorded with: the agents of its result when they add
// up to its record, or else one line of the record's counts and the requested model (no
// provider, so only a catch-all price can price it; otherwise it is flagged unpriced).
func (r *taskRecord) repair() TaskUsage {
	u := TaskUsage{
		EventID:    "reconcile:" + r.gap.TaskID,
		TaskID:     r.gap.TaskID,
		EnvID:      r.gap.EnvID,
		OrgID:      r.gap.OrgID,
		Failed:     r.gap.Status != statusCompleted,
		FinishedAt: r.gap.FinishedAt,
		Usage:      r.gap.Task,
	}
	if !u.Failed {
		u.Score = r.score
	}
	if len(r.agents) > 0 {
		var sum events.Usage
		for _, a := range r.agents {
			sum = sum.Add(a.Usage)
		}
		if sum == r.gap.Task {
			u.Agents = r.agents
		}
	}
	if u.Agents == nil {
		// A request without a model leaves it empty: unpriced.
		u.Agents = []events.AgentUsage{{Model: r.requestModel, Usage: r.gap.Task}}
	}
	return u
}

// adjustment is the line that brings the ledger's counts of a task to the converger's.
func (r *taskRecord) adjustment() TaskUsage {
	d := events.Usage{
		InputTokens:  r.gap.Task.InputTokens - r.gap.Ledger.InputTokens,
		OutputTokens: r.gap.Task.OutputTokens - r.gap.Ledger.OutputTokens,
		CachedTokens: r.gap.Task.CachedTokens - r.gap.Ledger.CachedTokens,
		TotalTokens:  r.gap.Task.TotalTokens - r.gap.Ledger.TotalTokens,
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%s|%+v|%+v", r.gap.TaskID, r.gap.Ledger, r.gap.Task))
	return TaskUsage{
		EventID:    "reconcile:" + r.gap.TaskID + ":" + hex.EncodeToString(key[:8]),
		TaskID:     r.gap.TaskID,
		EnvID:      r.gap.EnvID,
		OrgID:      r.gap.OrgID,
		FinishedAt: r.gap.FinishedAt,
		Agents:     []events.AgentUsage{{Agent: "reconcile", Provider: r.provider, Model: r.model, Usage: d}},
		kind:       KindAdjustment,
	}
}

// orphans are the candidates (tasks the ledger counted in the period that are not among the
// period's records) that the converger has no record of at all.
func orphans(ctx context.Context, records TaskRecords, candidates []TaskGap) ([]TaskGap, error) {
	out := []TaskGap{}
	const chunk = 1000
	for i := 0; i < len(candidates); i += chunk {
		part := candidates[i:min(i+chunk, len(candidates))]
		ids := make([]string, len(part))
		for j, g := range part {
			ids[j] = g.TaskID
		}
		known, err := records.Known(ctx, ids)
		if err != nil {
			return nil, fmt.Errorf("look up ledger tasks in the converger's records: %w", err)
		}
		for _, g := range part {
			if !slices.Contains(known, g.TaskID) {
				out = append(out, g)
			}
		}
	}
	return out, nil
}

func unpricedUsage(ctx context.Context, db DB, from, end time.Time) (UnpricedUsage, error) {
	var u UnpricedUsage
	err := db.QueryRow(ctx, `
		SELECT count(*), coalesce(sum(total_tokens), 0)::int8 FROM metering_ledger
		WHERE cost_micros IS NULL AND occurred_at >= $1 AND occurred_at < $2`, from, end).Scan(&u.Lines, &u.TotalTokens)
	if err != nil {
		return u, fmt.Errorf("count unpriced usage: %w", err)
	}
	return u, nil
}

// reprice prices the period's unpriced lines whose model prices now covers, one model per
// transaction, moving their cost into the rollups and out of the unpriced flags. The cost is
// computed as Rate.TokenCost computes it, rounding half away from zero.
func reprice(ctx context.Context, db DB, prices Prices, from, end time.Time, u *UnpricedUsage) error {
	rows, err := db.Query(ctx, `
		SELECT DISTINCT provider, model FROM metering_ledger
		WHERE cost_micros IS NULL AND occurred_at >= $1 AND occurred_at < $2`, from, end)
	if err != nil {
		return fmt.Errorf("find unpriced models: %w", err)
	}
	models, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var m [2]string
		err := r.Scan(&m[0], &m[1])
		return m, err
	})
	if err != nil {
		return fmt.Errorf("find unpriced models: %w", err)
	}
	for _, m := range models {
		rate, ok := prices.Lookup(m[0], m[1])
		if !ok {
			continue
		}
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `
				UPDATE metering_ledger SET price_version_id = $5,
					cost_micros = round(((input_tokens - cached_tokens)::numeric * $6
						+ cached_tokens::numeric * $7 + output_tokens::numeric * $8) / 1000000)::int8
				WHERE cost_micros IS NULL AND provider = $1 AND model = $2
					AND occurred_at >= $3 AND occurred_at < $4
				RETURNING env_id, org_id, occurred_at, calls, total_tokens, cost_micros`,
				m[0], m[1], from, end, prices.VersionID, int64(rate.Input), int64(rate.Cached), int64(rate.Output))
			if err != nil {
				return err
			}
			roll := newRollups()
			var lines, calls, tokens int64
			l := line{provider: m[0], model: m[1]}
			_, err = pgx.ForEachRow(rows, []any{&l.envID, &l.orgID, &l.occurredAt, &l.calls, &l.total, &l.cost}, func() error {
				// The line leaves the unpriced sums and adds its cost.
				roll.addDelta(&l, rollupDelta{orgID: l.orgID, cost: l.cost, unpricedCalls: -l.calls, unpricedTokens: -l.total})
				lines, calls, tokens = lines+1, calls+l.calls, tokens+l.total
				return nil
			})
			if err != nil {
				return err
			}
			if err := roll.write(ctx, tx); err != nil {
				return err
			}
			b := &pgx.Batch{}
			b.Queue(`UPDATE metering_unpriced_models SET lines = lines - $3, calls = calls - $4, total_tokens = total_tokens - $5
				WHERE provider = $1 AND model = $2`, m[0], m[1], lines, calls, tokens)
			u.RepricedLines += lines
			u.RepricedTokens += tokens
			return sendBatch(ctx, tx, b)
		})
		if err != nil {
			return fmt.Errorf("reprice %s/%s: %w", m[0], m[1], err)
		}
	}
	return nil
}
