package ledger

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/internal/pgerr"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

const (
	statusCompleted = "completed"
	statusFailed    = "failed"
)

// RecordTasks records a batch of task usage in one transaction: each event's ledger lines,
// priced with prices, and the rollup deltas they make, and ends the tasks' budget
// reservations. Events already in the ledger (by
// event ID) are skipped as duplicates, as are repeats within the batch; events about a task
// already counted under another event ID are skipped and returned as conflicts. Either every
// new event of the batch is recorded or, on error, none is. Usage is validated by the caller
// (TaskUsage.Validate).
//
// The first attempt writes the lines with one COPY: in the common case no key is taken and
// that is all. When one is (a redelivery, a republished event, another replica at work on the
// same event), the COPY fails on the unique key, the transaction is rolled back, and a second
// one inserts the events' line 0 with INSERT ... ON CONFLICT DO NOTHING, which skips the taken
// keys (waiting where another transaction holds them), then copies the other lines of the
// events that got in.
func (s *Store) RecordTasks(ctx context.Context, prices Prices, batch []TaskUsage) (Result, error) {
	unique := uniqueTasks(batch)
	repeats := len(batch) - len(unique)
	batch = unique
	if len(batch) == 0 {
		return Result{Duplicates: repeats}, nil
	}
	// An event's lines are priced when first needed: in the common case, as the COPY reads
	// them, so that work overlaps the database's.
	lines := make([][]line, len(batch))
	rates := newRateCache(prices)
	build := func(i int) []line {
		if lines[i] == nil {
			lines[i] = taskLines(&batch[i], prices.VersionID, rates)
		}
		return lines[i]
	}

	taskIDs := make([]string, len(batch))
	for i := range batch {
		taskIDs[i] = batch[i].TaskID
	}
	var res Result
	record := func(tx pgx.Tx, careful bool) error {
		res = Result{Duplicates: repeats}
		roll, flags := newRollups(), unpricedFlags{}
		count := func(i int) { // event i is recorded
			res.Recorded++
			for j := range lines[i] {
				l := &lines[i][j]
				roll.add(l)
				if l.unpriced() {
					flags.add(l)
					res.UnpricedLines++
					res.UnpricedTokens += l.total
				}
				res.Lines++
			}
		}
		if careful {
			for i := range batch {
				build(i)
			}
			inserted, err := insertTaken(ctx, tx, batch, lines, &res)
			if err != nil {
				return err
			}
			for i := range batch {
				if inserted[batch[i].EventID] {
					count(i)
				}
			}
		} else {
			src := &taskLineSource{events: len(batch), start: func(i int) []line {
				build(i)
				count(i)
				return lines[i]
			}}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"metering_ledger"}, lineColumnNames, src); err != nil {
				return fmt.Errorf("insert ledger lines: %w", err)
			}
		}
		if err := roll.write(ctx, tx); err != nil {
			return err
		}
		b := &pgx.Batch{}
		flags.queue(b)
		// The runs' budget reservations end with the transaction that records their cost.
		b.Queue(`DELETE FROM budget_reservations WHERE task_id = ANY($1)`, taskIDs)
		return sendBatch(ctx, tx, b)
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error { return record(tx, false) })
	if pgerr.IsUniqueViolation(err, "") {
		err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error { return record(tx, true) })
	}
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// taskLineSource is the pgx.CopyFromSource of the lines of a batch's events, in order. It asks
// start for an event's lines when the COPY reaches the event.
type taskLineSource struct {
	events int
	start  func(event int) []line
	event  int
	lines  []line
	next   int
	src    lineSource
}

func (t *taskLineSource) Next() bool {
	for t.next >= len(t.lines) {
		if t.event >= t.events {
			return false
		}
		t.lines, t.next = t.start(t.event), 0
		t.event++
	}
	t.src.lines = append(t.src.lines[:0], &t.lines[t.next])
	t.src.cur = 1
	t.next++
	return true
}

func (t *taskLineSource) Values() ([]any, error) { return t.src.Values() }

func (t *taskLineSource) Err() error { return nil }

// insertTaken inserts the lines of the events whose keys are free, skipping the others, and
// returns the event IDs it inserted; it sorts the skipped ones into res.
func insertTaken(ctx context.Context, tx pgx.Tx, batch []TaskUsage, lines [][]line, res *Result) (map[string]bool, error) {
	heads := make([]*line, len(lines))
	for i := range lines {
		heads[i] = &lines[i][0]
	}
	inserted, err := insertHeads(ctx, tx, heads)
	if err != nil {
		return nil, err
	}
	if err := classifySkipped(ctx, tx, batch, inserted, res); err != nil {
		return nil, err
	}
	var rest lineSource
	for i := range lines {
		if inserted[batch[i].EventID] {
			for j := 1; j < len(lines[i]); j++ {
				rest.add(&lines[i][j])
			}
		}
	}
	return inserted, copyLines(ctx, tx, &rest)
}

// uniqueTasks drops repeats of an event ID within the batch (a republished event can arrive
// twice in one fetch) and sorts by event ID, the order in which the transaction takes the
// ledger's key locks.
func uniqueTasks(batch []TaskUsage) []TaskUsage {
	order := make([]int, len(batch)) // sorting indices moves less than sorting the usages
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(batch[a].EventID, batch[b].EventID) })
	out := make([]TaskUsage, 0, len(batch))
	for _, i := range order {
		if len(out) == 0 || out[len(out)-1].EventID != batch[i].EventID {
			out = append(out, batch[i])
		}
	}
	return out
}

// classifySkipped sorts the events whose line 0 was not inserted into duplicates (the event
// is in the ledger) and conflicts (another event counted the task).
func classifySkipped(ctx context.Context, tx pgx.Tx, batch []TaskUsage, inserted map[string]bool, res *Result) error {
	var skipped []string
	for _, u := range batch {
		if !inserted[u.EventID] {
			skipped = append(skipped, u.EventID)
		}
	}
	rows, err := tx.Query(ctx, `SELECT event_id FROM metering_ledger WHERE line = 0 AND event_id = ANY($1)`, skipped)
	if err != nil {
		return fmt.Errorf("find duplicate events: %w", err)
	}
	known, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("find duplicate events: %w", err)
	}
	seen := make(map[string]bool, len(known))
	for _, id := range known {
		seen[id] = true
	}
	for _, u := range batch {
		switch {
		case inserted[u.EventID]:
		case seen[u.EventID]:
			res.Duplicates++
		default:
			res.Conflicts = append(res.Conflicts, Conflict{EventID: u.EventID, TaskID: u.TaskID})
		}
	}
	return nil
}

// taskLines turns a task's usage into priced ledger lines; line 0 counts the task.
func taskLines(u *TaskUsage, versionID int64, rates *rateCache) []line {
	agents := u.Agents
	if len(agents) == 0 {
		agents = []events.AgentUsage{{Usage: u.Usage}}
	}
	kind := cmp.Or(u.kind, KindTask)
	out := make([]line, len(agents))
	for i, a := range agents {
		l := line{
			eventID:    u.EventID,
			line:       int16(i),
			kind:       kind,
			envID:      u.EnvID,
			orgID:      u.OrgID,
			taskID:     u.TaskID,
			occurredAt: u.FinishedAt,
			provider:   a.Provider,
			model:      a.Model,
			agent:      a.Agent,
			calls:      a.Calls,
			input:      a.InputTokens,
			output:     a.OutputTokens,
			cached:     a.CachedTokens,
			total:      a.TotalTokens,
			versionID:  versionID,
		}
		l.cost, l.priced = lineCost(rates, &l)
		if i == 0 && kind == KindTask {
			l.tasks = 1
			l.status = statusCompleted
			if u.Failed {
				l.status = statusFailed
			}
			if u.Score != nil {
				l.score, l.hasScore = *u.Score, true
			}
		}
		out[i] = l
	}
	return out
}

// lineCost prices a usage line; priced is false when its model has no price and it used
// something. A line that used nothing costs nothing, whatever its model.
func lineCost(rates *rateCache, l *line) (cost int64, priced bool) {
	rate, ok := rates.lookup(l.provider, l.model)
	if !ok {
		return 0, l.calls == 0 && l.input == 0 && l.output == 0 && l.total == 0
	}
	return int64(rate.TokenCost(l.input, l.output, l.cached)), true
}

// rateCache remembers the rates a batch looked up: a batch has thousands of lines and a
// handful of models.
type rateCache struct {
	prices Prices
	rates  map[[2]string]cachedRate
}

type cachedRate struct {
	rate pricing.Rate
	ok   bool
}

func newRateCache(p Prices) *rateCache {
	return &rateCache{prices: p, rates: map[[2]string]cachedRate{}}
}

func (c *rateCache) lookup(provider, model string) (pricing.Rate, bool) {
	k := [2]string{provider, model}
	r, found := c.rates[k]
	if !found {
		r.rate, r.ok = c.prices.Lookup(provider, model)
		c.rates[k] = r
	}
	return r.rate, r.ok
}
