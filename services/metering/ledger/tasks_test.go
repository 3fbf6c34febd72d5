package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

func TestRecordTasks_SameEventAgain_CountedOnce(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	u := task("t1", 7, day0.Add(time.Hour), sonnet("A", 1000, 200, 100), sonnet("B", 800, 300, 0))

	res := record(t, s, p, u, u) // the same event twice in one batch
	require.Equal(t, 1, res.Recorded)
	require.Equal(t, 2, res.Lines)
	res = record(t, s, p, u) // and again later
	require.Equal(t, 0, res.Recorded)
	require.Equal(t, 1, res.Duplicates)
	require.Empty(t, res.Conflicts)

	require.EqualValues(t, 2, sumInt(t, pool, `SELECT count(*) FROM metering_ledger`))
	require.EqualValues(t, 1, sumInt(t, pool, `SELECT sum(tasks) FROM metering_rollup_daily`))
	require.EqualValues(t, 1800, sumInt(t, pool, `SELECT sum(input_tokens) FROM metering_rollup_monthly`))
	require.EqualValues(t, 4, sumInt(t, pool, `SELECT sum(calls) FROM metering_rollup_daily`))
}

func TestRecordTasks_AnotherEventForACountedTask_ConflictNotCounted(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	first := task("t1", 7, day0, sonnet("A", 1000, 200, 0))
	again := first
	again.EventID = "ev-t1-republished-under-a-new-id"
	record(t, s, p, first)
	res := record(t, s, p, again)
	require.Zero(t, res.Recorded)
	require.Zero(t, res.Duplicates)
	require.Equal(t, []ledger.Conflict{{EventID: again.EventID, TaskID: "t1"}}, res.Conflicts)
	require.EqualValues(t, 1000, sumInt(t, pool, `SELECT sum(input_tokens) FROM metering_rollup_daily`))
}

func TestRecordTasks_EachLinePricedAndStampedWithItsVersion(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	record(t, s, p, task("t1", 7, day0, sonnet("A", 1_000_000, 100_000, 200_000), gpt("B", 1000, 1000)))
	// Sonnet: 800k uncached at $3 + 200k cached at $0.30 + 100k out at $15 = 2.4 + 0.06 + 1.5.
	// GPT-4o: 1k in at $2.50 + 1k out at $10 = 0.0025 + 0.01.
	require.EqualValues(t, 3_960_000+12_500, sumInt(t, pool, `SELECT sum(cost_micros) FROM metering_ledger`))
	require.EqualValues(t, 3_960_000+12_500, sumInt(t, pool, `SELECT sum(cost_micros) FROM metering_rollup_monthly`))
	require.EqualValues(t, 0, sumInt(t, pool, `SELECT count(*) FROM metering_ledger WHERE price_version_id <> $1`, p.VersionID))

	// A new version prices new usage; old rows keep theirs.
	p2 := register(t, pool, `{"version": "test-2", "currency": "USD", "containerSecond": "0",
		"models": [{"provider": "*", "model": "*", "inputPerMillion": "1", "outputPerMillion": "1"}]}`)
	require.NotEqual(t, p.VersionID, p2.VersionID)
	record(t, s, p2, task("t2", 7, day0, gpt("A", 1_000_000, 0)))
	require.EqualValues(t, 1_000_000, sumInt(t, pool, `SELECT cost_micros FROM metering_ledger WHERE task_id = 't2'`))
	require.EqualValues(t, 2, sumInt(t, pool, `SELECT count(DISTINCT price_version_id) FROM metering_ledger`))
}

func TestRecordTasks_UnpricedModel_RecordedWithoutCostAndFlagged(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	mystery := events.AgentUsage{Agent: "A", Provider: "ollama", Model: "llama3:70b", Calls: 3,
		Usage: events.Usage{InputTokens: 500, OutputTokens: 100, TotalTokens: 600}}
	res := record(t, s, p, task("t1", 7, day0, mystery, sonnet("B", 1_000_000, 0, 0)))
	require.EqualValues(t, 1, res.UnpricedLines)
	require.EqualValues(t, 600, res.UnpricedTokens)

	require.EqualValues(t, 1, sumInt(t, pool, `SELECT count(*) FROM metering_ledger WHERE cost_micros IS NULL`),
		"unpriced usage has no cost, not a zero one")
	require.EqualValues(t, 3_000_000, sumInt(t, pool, `SELECT sum(cost_micros) FROM metering_rollup_daily`))
	require.EqualValues(t, 600, sumInt(t, pool, `SELECT sum(unpriced_tokens) FROM metering_rollup_daily`))
	require.EqualValues(t, 3, sumInt(t, pool, `SELECT sum(unpriced_calls) FROM metering_rollup_monthly`))

	models, err := ledger.ListUnpriced(t.Context(), pool, p)
	require.NoError(t, err)
	require.Len(t, models, 1)
	require.Equal(t, "ollama", models[0].Provider)
	require.Equal(t, "llama3:70b", models[0].Model)
	require.EqualValues(t, 600, models[0].TotalTokens)
	require.False(t, models[0].PricedNow)
	n, err := ledger.CountUnpriced(t.Context(), pool)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestRecordTasks_NoAgents_UsageIsOneLineOfNoModel(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	empty := ledger.TaskUsage{EventID: "e1", TaskID: "t1", EnvID: 7, OrgID: 1, Failed: true, FinishedAt: day0}
	spent := ledger.TaskUsage{EventID: "e2", TaskID: "t2", EnvID: 7, OrgID: 1, Failed: true, FinishedAt: day0,
		Usage: events.Usage{InputTokens: 10, OutputTokens: 5, TotalTokens: 15}}
	res := record(t, s, p, empty, spent)
	require.Equal(t, 2, res.Recorded)
	require.EqualValues(t, 1, res.UnpricedLines, "tokens of no known model are unpriced; a task that used nothing costs nothing")
	require.EqualValues(t, 2, sumInt(t, pool, `SELECT sum(failed_tasks) FROM metering_rollup_daily`))
	require.EqualValues(t, 0, sumInt(t, pool, `SELECT sum(score_count) FROM metering_rollup_daily`), "failed tasks have no score")
}

func TestTaskUsage_Validate(t *testing.T) {
	t.Parallel()
	ok := task("t1", 7, day0, sonnet("A", 10, 5, 2))
	require.NoError(t, ok.Validate())
	bad := map[string]func(u *ledger.TaskUsage){
		"no event id":        func(u *ledger.TaskUsage) { u.EventID = "" },
		"no task id":         func(u *ledger.TaskUsage) { u.TaskID = "" },
		"no tenant":          func(u *ledger.TaskUsage) { u.EnvID = 0 },
		"no organization":    func(u *ledger.TaskUsage) { u.OrgID = -1 },
		"no finish time":     func(u *ledger.TaskUsage) { u.FinishedAt = time.Time{} },
		"negative tokens":    func(u *ledger.TaskUsage) { u.Agents = []events.AgentUsage{sonnet("A", -1, 0, 0)} },
		"cached above input": func(u *ledger.TaskUsage) { u.Agents = []events.AgentUsage{sonnet("A", 1, 0, 2)} },
		"score above 100":    func(u *ledger.TaskUsage) { s := 101.0; u.Score = &s },
	}
	for name, mutate := range bad {
		u := ok
		mutate(&u)
		require.Error(t, u.Validate(), name)
	}
}
