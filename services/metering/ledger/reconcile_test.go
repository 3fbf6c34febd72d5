package ledger_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

// records are the converger's task records a reconciliation reads, as the converger answers
// for them (the metering's tests run the real converger on the bus for that).
type records []events.FinishedTask

func (r records) Finished(_ context.Context, from, end time.Time, page func([]events.FinishedTask) error) error {
	var in []events.FinishedTask
	for _, t := range r {
		if !t.FinishedAt.Before(from) && t.FinishedAt.Before(end) && t.Status != "queued" {
			in = append(in, t)
		}
	}
	return page(in)
}

func (r records) Known(_ context.Context, ids []string) ([]string, error) {
	var out []string
	for _, t := range r {
		if slices.Contains(ids, t.TaskID) {
			out = append(out, t.TaskID)
		}
	}
	return out, nil
}

// add records a task as the converger does, with its request's model and its result's agents.
func (r *records) add(id string, env int64, status string, at time.Time, u events.Usage, agents []events.AgentUsage) {
	score := 90.0
	*r = append(*r, events.FinishedTask{TaskID: id, EnvID: env, OrgID: 1, Status: status, FinishedAt: at, Usage: u,
		ConvergenceScore: &score, Model: "mystery-model", Agents: agents})
}

func usageOf(agents ...events.AgentUsage) events.Usage {
	var u events.Usage
	for _, a := range agents {
		u = u.Add(a.Usage)
	}
	return u
}

func TestReconcile_ReportsThenRepairsGaps_Idempotently(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	env := int64(1)
	var recs records
	at := day(1).Add(3 * time.Hour)
	a1 := []events.AgentUsage{sonnet("A", 1000, 100, 0), sonnet("B", 900, 90, 0)}
	a2 := []events.AgentUsage{gpt("A", 2000, 200)}
	a3 := []events.AgentUsage{sonnet("A", 3000, 300, 10)}
	recs.add("matched", env, "completed", at, usageOf(a1...), a1)
	recs.add("missing", env, "completed", at, usageOf(a2...), a2)
	recs.add("missing-no-agents", env, "failed", at, events.Usage{InputTokens: 50, OutputTokens: 5, TotalTokens: 55}, nil)
	recs.add("differs", env, "completed", at, usageOf(a3...), a3)
	recs.add("queued", env, "queued", at, events.Usage{}, nil)
	recs.add("cancelled-early", env, "cancelled", at, events.Usage{}, nil)
	recs.add("other-month", env, "completed", at.AddDate(0, 2, 0), usageOf(a2...), a2)

	short := task("differs", env, at, sonnet("A", 2900, 300, 10)) // the event under-reported 100 input tokens
	short.OrgID = 1
	matched := task("matched", env, at, a1...)
	matched.OrgID = 1
	orphan := task("orphan", env, at, gpt("A", 10, 10))
	orphan.OrgID = 1
	unpriced := task("unpriced", env, at, events.AgentUsage{Agent: "A", Provider: "ollama", Model: "llama3", Calls: 1,
		Usage: events.Usage{InputTokens: 1_000_000, TotalTokens: 1_000_000}})
	unpriced.OrgID = 1
	recs.add("unpriced", env, "completed", at, unpriced.Usage, unpriced.Agents)
	record(t, s, p, matched, short, orphan, unpriced)

	opts := ledger.ReconcileOptions{From: day(0), To: day(3)}
	rep, err := ledger.Reconcile(t.Context(), pool, recs, p, opts)
	require.NoError(t, err)
	require.Equal(t, 6, rep.TasksChecked, "finished tasks of the period: not the queued one, not another month's")
	require.Equal(t, 2, rep.Matched)
	require.ElementsMatch(t, []string{"missing", "missing-no-agents", "cancelled-early"}, taskIDs(rep.Missing))
	require.Equal(t, []string{"differs"}, taskIDs(rep.Mismatched))
	require.Equal(t, int64(100), rep.Mismatched[0].Task.InputTokens-rep.Mismatched[0].Ledger.InputTokens)
	require.Equal(t, []string{"orphan"}, taskIDs(rep.Orphaned))
	require.EqualValues(t, 1, rep.Unpriced.Lines)
	require.False(t, rep.Clean())
	require.EqualValues(t, 0, sumInt(t, pool, `SELECT count(*) FROM metering_ledger WHERE event_id LIKE 'reconcile:%'`), "a report writes nothing")

	// Prices that now cover llama3, then the repair.
	p2 := register(t, pool, `{"version": "test-2", "currency": "USD", "containerSecond": "0.00001", "models": [
		{"provider": "anthropic", "model": "claude-sonnet-4*", "inputPerMillion": "3", "outputPerMillion": "15", "cachedPerMillion": "0.30"},
		{"provider": "openai", "model": "gpt-4o*", "inputPerMillion": "2.50", "outputPerMillion": "10", "cachedPerMillion": "1.25"},
		{"provider": "ollama", "model": "*", "inputPerMillion": "0.10", "outputPerMillion": "0.10"}]}`)
	opts.Repair = true
	rep, err = ledger.Reconcile(t.Context(), pool, recs, p2, opts)
	require.NoError(t, err)
	require.True(t, rep.Missing[0].Repaired)
	require.EqualValues(t, 1, rep.Unpriced.RepricedLines)
	require.EqualValues(t, 1_000_000, rep.Unpriced.RepricedTokens)

	opts.Repair = false
	after, err := ledger.Reconcile(t.Context(), pool, recs, p2, opts)
	require.NoError(t, err)
	require.Equal(t, 6, after.Matched, "every finished task now matches")
	require.Empty(t, after.Missing)
	require.Empty(t, after.Mismatched)
	require.EqualValues(t, 1, after.Unpriced.Lines, "the task repaired without agents has no provider, so no price")
	require.Len(t, after.Orphaned, 1, "orphans are reported, never removed")

	// The repaired task was recorded from its agents, priced; the one without agents is
	// unpriced (no provider), not free.
	require.EqualValues(t, 5000+2000, sumInt(t, pool, `SELECT cost_micros FROM metering_ledger WHERE event_id = 'reconcile:missing'`), "2000 in at $2.50 and 200 out at $10 a million")
	require.EqualValues(t, 1, sumInt(t, pool, `SELECT count(*) FROM metering_ledger WHERE task_id = 'missing-no-agents' AND cost_micros IS NULL AND model = 'mystery-model'`))
	require.EqualValues(t, 300, sumInt(t, pool, `SELECT cost_micros FROM metering_ledger WHERE kind = 'adjustment'`), "100 input tokens at $3 a million")
	require.EqualValues(t, 100_000, sumInt(t, pool, `SELECT cost_micros FROM metering_ledger WHERE task_id = 'unpriced'`), "repriced at $0.10 a million")
	models, err := ledger.ListUnpriced(t.Context(), pool, p2)
	require.NoError(t, err)
	require.Len(t, models, 1, "llama3 is no longer flagged; the agentless repair is")
	require.Equal(t, "mystery-model", models[0].Model)

	// Running the repair again writes nothing, and the rollups still are the ledger's sums.
	lines := sumInt(t, pool, `SELECT count(*) FROM metering_ledger`)
	opts.Repair = true
	_, err = ledger.Reconcile(t.Context(), pool, recs, p2, opts)
	require.NoError(t, err)
	require.Equal(t, lines, sumInt(t, pool, `SELECT count(*) FROM metering_ledger`))
	kept := rollupRows(t, pool)
	require.NoError(t, ledger.RebuildRollups(t.Context(), pool))
	require.Equal(t, kept, rollupRows(t, pool))

	// A late event for a repaired task is not counted again.
	late := task("missing", env, at, a2...)
	late.OrgID = 1
	res := record(t, s, p2, late)
	require.Len(t, res.Conflicts, 1)

	// The tenant's totals are now the sum of its tasks' usage, plus the orphan.
	var tasksIn, ledgerIn int64
	for _, r := range recs {
		if r.FinishedAt.Before(day(4)) && r.Status != "queued" {
			tasksIn += r.Usage.InputTokens
		}
	}
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT sum(input_tokens) FROM metering_rollup_daily WHERE env_id = $1`, env).Scan(&ledgerIn))
	require.Equal(t, tasksIn+10, ledgerIn)

	data, err := json.Marshal(after)
	require.NoError(t, err)
	require.Contains(t, string(data), `"from":"2025-03-14"`)
	require.Contains(t, string(data), `"clean":false`)
	require.Contains(t, string(data), `"tasksChecked":6`)
	require.Contains(t, string(data), `"taskId":"orphan","envId":1,"orgId":1,"finishedAt":"2025-03-15T03:00:00Z","ledger":{"inputTokens":10,"outputTokens":10,"cachedTokens":0,"totalTokens":20},"repaired":false,"task":null}`,
		"an orphan has no task record to show")
}

func taskIDs(gaps []ledger.TaskGap) []string {
	out := []string{}
	for _, g := range gaps {
		out = append(out, g.TaskID)
	}
	return out
}
