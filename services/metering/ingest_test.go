package metering_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/pkg/events/eventstest"
)

var t0 = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)

func TestIngest_CompletedEventDeliveredThreeTimesPublishedTwice_CountsOnce(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ev := completed("task-1", 7, 1, t0, sonnet("A", 1200, 300), sonnet("B", 800, 200))

	// Published twice inside JetStream's duplicate window (dropped there), and once more as a
	// relay would republish it after the window: two stream messages with one event ID.
	require.False(t, p.publish(events.SubjectConvergeCompleted, ev, ""))
	require.True(t, p.publish(events.SubjectConvergeCompleted, ev, ""), "JetStream drops the repeat inside its window")
	require.False(t, p.publish(events.SubjectConvergeCompleted, ev, ev.ID+"-after-the-window"))

	// Each message's first two acknowledgements are lost, so each is delivered three times.
	// One message a batch, so each message's acknowledgement is decided on its own.
	cfg := testConfig()
	cfg.BatchSize = 1
	var mu sync.Mutex
	maxDelivery := map[uint64]int{}
	in := p.start(cfg, func(_ *instance, _ string, _ []string, deliveries []uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		ack := true
		for _, d := range deliveries {
			maxDelivery[d]++
			ack = ack && d >= 3
		}
		return ack
	})
	p.drained(events.StreamConvergeResults, events.ConsumerMeteringResults)

	mu.Lock()
	require.Equal(t, 2, maxDelivery[3], "both messages were delivered a third time")
	mu.Unlock()
	require.EqualValues(t, 1, p.count(`SELECT count(*) FROM metering_ledger WHERE line = 0`))
	require.EqualValues(t, 1, p.count(`SELECT sum(tasks) FROM metering_rollup_daily`))
	require.EqualValues(t, 2000, p.count(`SELECT sum(input_tokens) FROM metering_rollup_monthly`))
	require.EqualValues(t, 2500, p.count(`SELECT sum(total_tokens) FROM metering_ledger`))
	require.Equal(t, 1, in.events("results", "recorded"))
	require.Equal(t, 5, in.events("results", "duplicate"), "six handlings, one effect")

	// The usage went out once, as one usage.recorded event with a record of the ledger's two
	// lines.
	billing, err := p.JS.Stream(t.Context(), events.StreamBilling)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := billing.Info(t.Context())
		return err == nil && info.State.Msgs == 1
	}, 10*time.Second, 20*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // no second one comes
	info, err := billing.Info(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs)
	msg, err := billing.GetMsg(t.Context(), 1)
	require.NoError(t, err)
	require.Equal(t, "usage.recorded.1", msg.Subject)
	v, err := eventstest.NewValidator()
	require.NoError(t, err)
	require.NoError(t, v.Validate(msg.Data), "the event is its schema's")
	env, err := events.Decode(msg.Data)
	require.NoError(t, err)
	var usage events.UsageRecorded
	require.NoError(t, json.Unmarshal(env.Data, &usage))
	require.Len(t, usage.Records, 1)
	rec := usage.Records[0]
	require.Equal(t, ev.ID, rec.SourceEventID)
	require.Equal(t, "task-1", rec.TaskID)
	require.EqualValues(t, 7, rec.EnvID)
	require.Len(t, rec.Lines, 2)
	require.EqualValues(t, 1500, rec.Lines[0].TotalTokens)
	require.NotNil(t, rec.Lines[0].CostMicros, "sonnet is priced")
}

func TestIngest_TwoInstancesOneDurable_EveryEventCountedOnce(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	cfg := testConfig()
	cfg.BatchSize = 16
	cfg.AckWait = 5 * time.Second // no redelivery from a slow machine: duplicates are counted below
	a, b := p.start(cfg, nil), p.start(cfg, nil)
	time.Sleep(300 * time.Millisecond) // both are pulling

	const n = 600
	want := map[int64]int64{}
	for i := range n {
		env := int64(10 + i%4)
		in := int64(100 + i)
		ev := completed(fmt.Sprintf("task-%d", i), env, 1+env%2, t0.Add(time.Duration(i)*time.Minute), sonnet("A", in, 10))
		want[env] += in
		p.publish(events.SubjectConvergeCompleted, ev, "")
		if i%5 == 0 { // republished after the window: a second message, likely to the other replica
			p.publish(events.SubjectConvergeCompleted, ev, ev.ID+"-again")
		}
	}
	p.drained(events.StreamConvergeResults, events.ConsumerMeteringResults)

	require.EqualValues(t, n, p.count(`SELECT count(*) FROM metering_ledger WHERE line = 0`))
	require.EqualValues(t, n, p.count(`SELECT sum(tasks) FROM metering_rollup_monthly`))
	for env, in := range want {
		require.Equal(t, in, p.count(`SELECT sum(input_tokens) FROM metering_rollup_daily WHERE env_id = $1`, env), "tenant %d", env)
	}
	recordedA, recordedB := a.events("results", "recorded"), b.events("results", "recorded")
	require.Equal(t, n, recordedA+recordedB, "each event recorded by exactly one replica")
	require.Equal(t, n/5, a.events("results", "duplicate")+b.events("results", "duplicate"))
	require.Positive(t, recordedA, "replica A took part")
	require.Positive(t, recordedB, "replica B took part")
}

func TestIngest_CrashAfterCommitBeforeAck_NothingLostNothingDoubled(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	const n = 120
	var total int64
	for i := range n {
		in := int64(1000 + i)
		total += in
		p.publish(events.SubjectConvergeCompleted, completed(fmt.Sprintf("task-%d", i), 7, 1, t0, sonnet("A", in, 1)), "")
	}

	// The first replica commits its first batch and dies before acknowledging it.
	crashed := make(chan int, 1)
	first := p.start(testConfig(), func(in *instance, _ string, ids []string, _ []uint64) bool {
		in.NC.Close() // the process is gone: no acks, no naks, no heartbeats, no more pulls
		select {
		case crashed <- len(ids):
		default:
			t.Error("a replica that died committed a second batch")
		}
		<-in.ctx.Done() // and does nothing more, until the test stops what is left of it
		return false
	})
	var committed int
	select {
	case committed = <-crashed:
	case <-time.After(10 * time.Second):
		t.Fatal("no batch committed")
	}
	first.Stop(t)
	require.Positive(t, committed)
	require.EqualValues(t, committed, p.count(`SELECT count(*) FROM metering_ledger WHERE line = 0`), "the batch is committed")

	// A second replica gets the unacknowledged batch again once its ack deadline passes.
	second := p.start(testConfig(), nil)
	p.drained(events.StreamConvergeResults, events.ConsumerMeteringResults)
	require.EqualValues(t, n, p.count(`SELECT count(*) FROM metering_ledger WHERE line = 0`), "nothing lost")
	require.Equal(t, total, p.count(`SELECT sum(input_tokens) FROM metering_rollup_monthly`), "nothing doubled")
	require.GreaterOrEqual(t, second.events("results", "duplicate"), committed, "the redelivered batch changed nothing")
	require.Equal(t, n-committed, second.events("results", "recorded"))
}

func TestIngest_PoisonMessages_DeadLetteredWhileTheRestIsRecorded(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	good := 0
	for i := range 10 {
		p.publish(events.SubjectConvergeCompleted, completed(fmt.Sprintf("good-%d", i), 7, 1, t0, sonnet("A", 10, 1)), "")
		good++
	}
	p.publishRaw(events.SubjectConvergeCompleted, []byte("not an event"), "")
	negative := completed("negative", 7, 1, t0, sonnet("A", -5, 1))
	p.publish(events.SubjectConvergeCompleted, negative, "")
	noTenant := completed("no-tenant", 0, 1, t0, sonnet("A", 5, 1))
	p.publish(events.SubjectConvergeCompleted, noTenant, "")
	// Valid to the decoder and vouched for by the converger, refused by PostgreSQL (text
	// cannot hold NUL): the batch fails, and the events are recorded one by one to find the
	// culprit.
	nulModel := sonnet("A", 5, 1)
	nulModel.Model = "claude\x00sonnet"
	nul := completed("nul-model", 7, 1, t0, nulModel)
	p.publish(events.SubjectConvergeCompleted, nul, "")
	for i := range 5 {
		p.publish(events.SubjectConvergeCompleted, completed(fmt.Sprintf("after-%d", i), 7, 1, t0, sonnet("A", 10, 1)), "")
		good++
	}
	in := p.start(testConfig(), nil)
	p.drained(events.StreamConvergeResults, events.ConsumerMeteringResults)

	require.EqualValues(t, good, p.count(`SELECT count(*) FROM metering_ledger`))
	// A dead-lettered message is counted just after it is terminated.
	require.Eventually(t, func() bool { return in.events("results", "dead_lettered") == 4 }, 5*time.Second, 10*time.Millisecond)
	dlq, err := p.JS.Stream(t.Context(), events.StreamDeadLetter)
	require.NoError(t, err)
	info, err := dlq.Info(t.Context())
	require.NoError(t, err)
	require.EqualValues(t, 4, info.State.Msgs)
	reasons := map[string]bool{}
	for seq := uint64(1); seq <= 4; seq++ {
		m, err := dlq.GetMsg(t.Context(), seq)
		require.NoError(t, err)
		require.Equal(t, events.DeadLetterSubject(events.ConsumerMeteringResults), m.Subject)
		reasons[m.Header.Get(consumer.HeaderDLQError)] = true
	}
	require.Len(t, reasons, 4, "each copy says why: %v", reasons)
}

func TestIngest_LedgerUnavailable_BatchHeldAndRetried_NotDeadLettered(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	// The ledger "disappears" (as in a botched deployment, or a database that fails every write
	// for a while): no fault of the events, which must wait, not be dead-lettered.
	_, err := p.Pool.Exec(t.Context(), `ALTER TABLE metering_ledger RENAME TO metering_ledger_away`)
	require.NoError(t, err)
	var mu sync.Mutex
	deliveries := map[string]uint64{}
	cfg := testConfig()
	cfg.AckWait = 2 * time.Second // heartbeats every 667ms keep the batch
	in := p.start(cfg, func(_ *instance, _ string, ids []string, ds []uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		for i, id := range ids {
			deliveries[id] = max(deliveries[id], ds[i])
		}
		return true
	})
	for i := range 10 {
		p.publish(events.SubjectConvergeCompleted, completed(fmt.Sprintf("task-%d", i), 7, 1, t0, sonnet("A", 10, 1)), "")
	}
	require.Eventually(t, func() bool { return in.metric("convergence_metering_write_retries_total", "source", "results") >= 3 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(2500 * time.Millisecond) // longer than the ack wait: heartbeats keep the batch
	_, err = p.Pool.Exec(t.Context(), `ALTER TABLE metering_ledger_away RENAME TO metering_ledger`)
	require.NoError(t, err)

	p.drained(events.StreamConvergeResults, events.ConsumerMeteringResults)
	require.EqualValues(t, 10, p.count(`SELECT count(*) FROM metering_ledger`))
	require.Zero(t, in.events("results", "dead_lettered"))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, deliveries, 10)
	for id, d := range deliveries {
		require.EqualValues(t, 1, d, "event %s was held, not redelivered", id)
	}
}

func TestIngest_InvalidLifecycleFacts_DeadLettered(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	bad, err := events.NewEnvelope("test", events.TypeTenantLifecycle, "", "", events.TenantLifecycle{EnvID: 7, OrgID: 1, State: "exploded", At: t0})
	require.NoError(t, err)
	p.publish(events.LifecycleSubject("exploded", 7), bad, "")
	wrongType, err := events.NewEnvelope("test", events.TypeConvergeCompleted, "", "", events.TenantLifecycle{EnvID: 7, OrgID: 1, State: events.StateRunning, At: t0})
	require.NoError(t, err)
	p.publish(events.LifecycleSubject(events.StateRunning, 7), wrongType, "")
	p.publish(events.LifecycleSubject(events.StateRunning, 7), lifecycle(7, 1, events.StateRunning, t0), "")
	in := p.start(testConfig(), nil)
	p.drained(events.StreamTenantLifecycle, events.ConsumerMeteringLifecyle)
	require.Eventually(t, func() bool { return in.events("lifecycle", "dead_lettered") == 2 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, in.events("lifecycle", "recorded"))
	require.EqualValues(t, 1, p.count(`SELECT count(*) FROM metering_runtime WHERE last_up`))
}

func TestIngest_ResultsTheConvergerDoesNotVouchFor_RefusedCountedNeverBilled(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	// What the converger recorded.
	usage := func(in int64) events.Usage {
		return events.Usage{InputTokens: in, OutputTokens: 1, TotalTokens: in + 1}
	}
	p.insertTask("tsk-other-tenant", 8, 1, "completed", usage(10))
	p.insertTask("tsk-inflated", 7, 1, "completed", usage(10))
	p.insertTask("tsk-still-running", 7, 1, "running", usage(10))
	p.insertTask("tsk-failed", 7, 1, "failed", usage(10))

	// Results that a holder of the converger's identity might forge, sent as they are.
	send := func(env events.Envelope) {
		data, err := json.Marshal(env)
		require.NoError(t, err)
		p.publishRaw(events.SubjectConvergeCompleted, data, env.ID)
	}
	send(completed("tsk-never-recorded", 7, 1, t0, sonnet("A", 1_000_000, 1)))
	send(completed("tsk-other-tenant", 7, 1, t0, sonnet("A", 10, 1)))
	send(completed("tsk-inflated", 7, 1, t0, sonnet("A", 1_000_000, 1)))
	send(completed("tsk-still-running", 7, 1, t0, sonnet("A", 10, 1)))
	send(completed("tsk-failed", 7, 1, t0, sonnet("A", 10, 1)))
	// And one the converger vouches for.
	p.publish(events.SubjectConvergeCompleted, completed("tsk-honest", 7, 1, t0, sonnet("A", 10, 1)), "")

	in := p.start(testConfig(), nil)
	p.drained(events.StreamConvergeResults, events.ConsumerMeteringResults)
	require.EqualValues(t, 1, p.count(`SELECT count(*) FROM metering_ledger`), "only the honest result is billed")
	require.EqualValues(t, 1, p.count(`SELECT count(*) FROM metering_ledger WHERE task_id = 'tsk-honest'`))
	for _, reason := range []string{"unknown_task", "foreign_task", "usage_mismatch", "unfinished_task", "status_mismatch"} {
		require.InDelta(t, 1, in.metric("convergence_metering_results_refused_total", "reason", reason), 0, reason)
	}
	require.Equal(t, 5, in.events("results", "refused"))
	require.Zero(t, in.events("results", "dead_lettered"), "refused, not retried or dead-lettered")
}
