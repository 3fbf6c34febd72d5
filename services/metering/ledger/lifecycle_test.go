package ledger_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

// timeline is a tenant's lifecycle over three days: billed 10:00:00.250-23:30 on day 0 (with
// an unhealthy hour, still billed), 22:00 on day 1 to 01:00:00.5 on day 2 (across midnight),
// and 02:00-02:10 on day 2.
func timeline(env int64, prefix string) []ledger.LifecycleFact {
	at := func(d, h, m int, ms int) time.Time {
		return day(d).Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(ms)*time.Millisecond)
	}
	return []ledger.LifecycleFact{
		fact(prefix+"1", env, events.StateProvisioning, at(0, 9, 0, 0)),
		fact(prefix+"2", env, events.StateRunning, at(0, 10, 0, 250)),
		fact(prefix+"3", env, events.StateUnhealthy, at(0, 20, 0, 0)),
		fact(prefix+"4", env, events.StateRunning, at(0, 21, 0, 0)),
		fact(prefix+"5", env, events.StateStopped, at(0, 23, 30, 0)),
		fact(prefix+"6", env, events.StateRunning, at(1, 22, 0, 0)),
		fact(prefix+"7", env, events.StateError, at(2, 1, 0, 500)),
		fact(prefix+"8", env, events.StateRunning, at(2, 2, 0, 0)),
		fact(prefix+"9", env, events.StateDestroyed, at(2, 2, 10, 0)),
	}
}

// Billed milliseconds of timeline, in all and per day.
const timelineMS = 48_599_750 + 10_800_500 + 600_000

var timelineDays = map[time.Time]int64{day(0): 48_599_750, day(1): 7_200_000, day(2): 3_600_500 + 600_000}

func recordFacts(t *testing.T, s *ledger.Store, p ledger.Prices, facts ...ledger.LifecycleFact) ledger.Result {
	t.Helper()
	res, err := s.RecordLifecycle(t.Context(), p, facts)
	require.NoError(t, err)
	return res
}

func requireRunTime(t *testing.T, db ledger.DB, env int64, msg string) {
	t.Helper()
	require.EqualValues(t, timelineMS, sumInt(t, db, `SELECT coalesce(sum(container_ms), 0) FROM metering_ledger WHERE env_id = $1`, env), msg)
	for d, ms := range timelineDays {
		require.Equal(t, ms, sumInt(t, db, `SELECT coalesce(sum(container_ms), 0) FROM metering_rollup_daily WHERE env_id = $1 AND day = $2`, env, d), "%s: day %s", msg, d)
	}
	require.EqualValues(t, timelineMS, sumInt(t, db, `SELECT coalesce(sum(container_ms), 0) FROM metering_rollup_monthly WHERE env_id = $1`, env), msg)
	require.EqualValues(t, 0, sumInt(t, db, `SELECT count(*) FROM metering_runtime WHERE env_id = $1 AND last_up`, env), "%s: the tenant is destroyed", msg)
}

func TestRecordLifecycle_InOrder_BillsRunningAndUnhealthyTime(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	res := recordFacts(t, s, p, timeline(7, "f")...)
	require.Equal(t, 9, res.Recorded)
	requireRunTime(t, pool, 7, "in order, one batch")
	// 60000.25 s at 10 micros a second is 600002.5 micros; each of the six lines is rounded on
	// its own (359997.5 and 36000.5 round up).
	require.EqualValues(t, 6, sumInt(t, pool, `SELECT count(*) FROM metering_ledger`))
	require.EqualValues(t, 600_003, sumInt(t, pool, `SELECT sum(cost_micros) FROM metering_ledger`))
}

func TestRecordLifecycle_AnyOrderAnyBatchingWithRepeats_SameRunTime(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for k := range 40 {
		env := int64(1000 + k)
		facts := timeline(env, "k"+string(rune('a'+k%26))+string(rune('a'+k/26))+"-")
		facts = append(facts, facts[rng.IntN(len(facts))], facts[rng.IntN(len(facts))]) // repeats
		rng.Shuffle(len(facts), func(i, j int) { facts[i], facts[j] = facts[j], facts[i] })
		for len(facts) > 0 {
			n := 1 + rng.IntN(min(4, len(facts)))
			recordFacts(t, s, p, facts[:n]...)
			facts = facts[n:]
		}
		requireRunTime(t, pool, env, "shuffled")
	}
}

func TestRecordLifecycle_TwoWritersSameTenant_SameRunTime(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	facts := timeline(7, "f")
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			order := rand.New(rand.NewPCG(uint64(w), 9)).Perm(len(facts))
			for _, i := range order {
				_, err := s.RecordLifecycle(t.Context(), p, []ledger.LifecycleFact{facts[i]})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	requireRunTime(t, pool, 7, "two writers")
}

func TestRecordLifecycle_Duplicates_Skipped(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	facts := timeline(7, "f")
	recordFacts(t, s, p, facts...)
	res := recordFacts(t, s, p, facts[3], facts[5])
	require.Zero(t, res.Recorded)
	require.Equal(t, 2, res.Duplicates)
	requireRunTime(t, pool, 7, "after repeats")
}

func TestSummarize_OpenSegment_CountsToNowAtItsPrice(t *testing.T) {
	t.Parallel()
	pool, s, p := setup(t)
	recordFacts(t, s, p, fact("a", 7, events.StateRunning, day(0).Add(22*time.Hour)))
	now := day(1).Add(2*time.Hour + 500*time.Millisecond)

	sum := summarize(t, pool, ledger.Query{From: day(0), To: day(5), GroupBy: []ledger.Dimension{ledger.ByDay}, Now: now})
	require.EqualValues(t, 4*3600_000+500, sum.Totals.ContainerMS)
	require.Len(t, sum.Groups, 2, "split at midnight")
	require.EqualValues(t, 2*3600_000, sum.Groups[0].ContainerMS)
	require.Equal(t, day(0), sum.Groups[0].Period)
	require.EqualValues(t, 72_000, sum.Groups[0].Cost)

	// A range that ends before now stops at its end; one that starts later starts there.
	sum = summarize(t, pool, ledger.Query{From: day(0), To: day(0), Now: now})
	require.EqualValues(t, 2*3600_000, sum.Totals.ContainerMS)
	sum = summarize(t, pool, ledger.Query{From: day(1), To: day(1), Now: now})
	require.EqualValues(t, 2*3600_000+500, sum.Totals.ContainerMS)

	// The stop books the segment into the ledger, and nothing is counted twice.
	recordFacts(t, s, p, fact("b", 7, events.StateStopped, now))
	sum = summarize(t, pool, ledger.Query{From: day(0), To: day(5), Now: now.Add(time.Hour)})
	require.EqualValues(t, 4*3600_000+500, sum.Totals.ContainerMS)
	require.EqualValues(t, 4*3600_000+500, sumInt(t, pool, `SELECT sum(container_ms) FROM metering_ledger`))
}
