package converger_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
	"github.com/convergence-dev/convergence/services/converger/tasks"
)

// waitConsumerIdle waits until the converger's consumer has nothing pending or unacknowledged.
func (e *env) waitConsumerIdle() {
	e.t.Helper()
	natstest.WaitDrained(e.t, e.js, events.StreamConvergeCommands, events.ConsumerConverger, 10*time.Second)
}

func TestConverger_RedeliveredRequestForFinishedTask_ProviderNotCalledAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	p := &counting{next: simulated.New(simulated.Config{})}
	e.startConverger(testConfig(), p)
	id := e.submit(acme, tasks.Request{Prompt: "Decide on a queue. [sim:converge]", Type: "decide"})
	first := e.waitFinished(acme, id, 10*time.Second)
	require.EqualValues(t, 7, p.calls.Load())
	e.waitResultEvent(id)

	// The same request again, as a publish that escaped the duplicate window would bring it.
	var raw []byte
	require.NoError(t, e.pool.QueryRow(t.Context(), `SELECT payload FROM converger.outbox WHERE subject = $1`, events.SubjectConvergeRequest).Scan(&raw))
	msg := &nats.Msg{Subject: events.SubjectConvergeRequest, Data: raw, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, "redelivery-of-"+id)
	_, err := e.js.PublishMsg(t.Context(), msg)
	require.NoError(t, err)
	e.waitConsumerIdle()

	require.EqualValues(t, 7, p.calls.Load(), "a finished task is not run again")
	again, err := e.store.Get(t.Context(), acme, id)
	require.NoError(t, err)
	require.Equal(t, first.Usage, again.Usage)
	require.Equal(t, first.FinishedAt, again.FinishedAt)
	require.Len(t, e.resultEvents()[id], 1, "its result is published once")
}

func TestConverger_KilledMidTaskAndRestarted_ResumesWithoutDoubleCountedUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	req := tasks.Request{Prompt: "Design a rate limiter for a multi-tenant API. [sim:converge]", Type: "design"}

	// What the task costs when nothing goes wrong: the simulated provider is deterministic.
	norm, err := engine.DefaultLimits().Normalize(req.EngineTask(""))
	require.NoError(t, err)
	eng, err := engine.New(engine.Config{}, simulated.New(simulated.Config{}), logger())
	require.NoError(t, err)
	reference, err := eng.Run(t.Context(), norm, engine.Options{})
	require.NoError(t, err)

	cfg := testConfig()
	cfg.AckWait = time.Second // How soon the dead converger's task is redelivered.
	// The first converger hangs in B's turn of round two, call 4: round one (A1, B1) is
	// persisted, and A2 is saved as the converger stops.
	first := &counting{next: simulated.New(simulated.Config{}), block: func(n int64) bool { return n == 4 }}
	stop, nc := e.startConvergerConn(cfg, first)
	id := e.submit(acme, req)
	require.Eventually(t, func() bool { return first.calls.Load() == 4 }, 10*time.Second, 5*time.Millisecond)
	rec, err := e.store.Get(t.Context(), acme, id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRunning, rec.Status)
	require.Equal(t, 1, rec.Rounds)

	// Killed once it is all up (a kill while one of its consumers is still being made ends its
	// Run with that error): its connection drops without a word to JetStream (no ack, no nak),
	// then it stops.
	for stream, name := range map[string]string{
		events.StreamTenantLifecycle: events.ConsumerConvergerTenants,
		events.StreamDeadLetter:      events.ConsumerConvergerDeadLetters,
		events.StreamBilling:         events.ConsumerConvergerBudgetAlerts,
	} {
		require.Eventually(t, func() bool {
			_, err := e.js.Consumer(t.Context(), stream, name)
			return err == nil
		}, 10*time.Second, 5*time.Millisecond, "the converger's consumer %s", name)
	}
	nc.Close()
	stop()
	rec, err = e.store.Get(t.Context(), acme, id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRunning, rec.Status, "a dead converger records no end")

	second := &counting{next: simulated.New(simulated.Config{})}
	e.startConverger(cfg, second)
	rec = e.waitFinished(acme, id, 15*time.Second)

	require.Equal(t, tasks.StatusCompleted, rec.Status)
	require.EqualValues(t, string(reference.StopReason), rec.Result.StopReason)
	require.EqualValues(t, 4, second.calls.Load(), "B2, A3, B3 and the synthesis: the persisted turns are not asked for again")
	require.Equal(t, tasks.UsageOf(reference.Usage.Total), rec.Usage, "usage is what an uninterrupted run costs: nothing counted twice")
	require.Equal(t, rec.Usage, e.persistedUsage(id))
	require.Equal(t, reference.Score.Value, rec.Result.ConvergenceScore)
	require.Equal(t, reference.Output, rec.Result.Output)
	requireAgentsAddUp(t, rec.Result)
	var calls int64
	for _, a := range rec.Result.Agents {
		calls += a.Calls
	}
	require.EqualValues(t, 7, calls)

	var run int
	require.NoError(t, e.pool.QueryRow(t.Context(), `SELECT run FROM convergence_tasks WHERE id = $1`, id).Scan(&run))
	require.Equal(t, 2, run, "claimed once by each converger")
	rounds, err := e.store.Rounds(t.Context(), id, 0)
	require.NoError(t, err)
	require.Len(t, rounds, 3)
	ev := decodeData[events.ConvergeCompleted](t, e.waitResultEvent(id))
	require.Equal(t, rec.Usage, ev.Usage)
	require.Len(t, e.resultEvents()[id], 1)
}

func TestConverger_GracefulStopMidTask_AnotherConvergerResumesAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	cfg := testConfig()
	cfg.AckWait = time.Minute // A resume that waited for redelivery would time the test out.
	first := &counting{next: simulated.New(simulated.Config{}), block: func(n int64) bool { return n == 3 }}
	stop := e.startConverger(cfg, first)
	id := e.submit(acme, tasks.Request{Prompt: "Plan a launch. [sim:converge]", Type: "plan"})
	require.Eventually(t, func() bool { return first.calls.Load() == 3 }, 10*time.Second, 5*time.Millisecond)
	stop() // Shutdown: the task is handed back with NakWithDelay(0).

	second := &counting{next: simulated.New(simulated.Config{})}
	e.startConverger(cfg, second)
	rec := e.waitFinished(acme, id, 10*time.Second)
	require.Equal(t, tasks.StatusCompleted, rec.Status)
	require.EqualValues(t, 5, second.calls.Load(), "round one was persisted and is not asked for again")
	require.Equal(t, rec.Usage, e.persistedUsage(id))
}

func TestConverger_CancelRequest_RunningTaskEndsCancelledWithExactUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	e.startConverger(testConfig(), simulated.New(simulated.Config{Latency: 20 * time.Millisecond}))
	id := e.submit(acme, tasks.Request{Prompt: "Analyse churn. [sim:never]", Type: "analyze", MaxRounds: 10})
	require.Eventually(t, func() bool {
		rec, err := e.store.Get(t.Context(), acme, id)
		return err == nil && rec.Rounds >= 1
	}, 10*time.Second, 5*time.Millisecond)

	status, err := e.store.RequestCancel(t.Context(), e.ob, acme, id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRunning, status)
	start := time.Now()
	require.NoError(t, e.nc.Publish(tasks.CancelSubject(id), nil))
	rec := e.waitFinished(acme, id, 5*time.Second)

	require.Less(t, time.Since(start), time.Second, "the converger running it is told at once")
	require.Equal(t, tasks.StatusCancelled, rec.Status)
	require.EqualValues(t, "cancelled", rec.Result.StopReason)
	require.Less(t, rec.Rounds, 10)
	require.Equal(t, rec.Usage, e.persistedUsage(id), "the call cut short was not billed; every billed one is persisted")
	requireAgentsAddUp(t, rec.Result)
	ev := decodeData[events.ConvergeFailed](t, e.waitResultEvent(id))
	require.Equal(t, "cancelled", ev.StopReason)
	require.Equal(t, rec.Usage, ev.Usage)
}

func TestConverger_CancelMessageLost_CancelledAtTheNextRound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	e.startConverger(testConfig(), simulated.New(simulated.Config{Latency: 10 * time.Millisecond}))
	id := e.submit(acme, tasks.Request{Prompt: "Analyse churn. [sim:never]", Type: "analyze", MaxRounds: 10})
	require.Eventually(t, func() bool {
		rec, err := e.store.Get(t.Context(), acme, id)
		return err == nil && rec.Rounds >= 1
	}, 10*time.Second, 5*time.Millisecond)

	// Recorded, but the core-NATS message never sent.
	_, err := e.store.RequestCancel(t.Context(), e.ob, acme, id)
	require.NoError(t, err)
	at, err := e.store.Get(t.Context(), acme, id)
	require.NoError(t, err)
	rec := e.waitFinished(acme, id, 5*time.Second)
	require.Equal(t, tasks.StatusCancelled, rec.Status)
	require.LessOrEqual(t, rec.Rounds, at.Rounds+1, "found when the next round is saved")
}

func TestConverger_CancelQueuedTask_NeverRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	id := e.submit(acme, tasks.Request{Prompt: "Generate a haiku. [sim:converge]", Type: "generate"})
	status, err := e.store.RequestCancel(t.Context(), e.ob, acme, id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCancelled, status)

	p := &counting{next: simulated.New(simulated.Config{})}
	e.startConverger(testConfig(), p)
	e.waitConsumerIdle()
	require.Zero(t, p.calls.Load())
	rec, err := e.store.Get(t.Context(), acme, id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCancelled, rec.Status)
	require.Zero(t, rec.Usage.TotalTokens)
	ev := decodeData[events.ConvergeFailed](t, e.waitResultEvent(id))
	require.Equal(t, "cancelled", ev.StopReason)

	// Another tenant cannot cancel, or see, it.
	other := e.tenant("other")
	_, err = e.store.RequestCancel(t.Context(), e.ob, other, id)
	require.ErrorIs(t, err, tasks.ErrNotFound)
}

func TestConverger_DeadLetteredRequest_TaskFailsAndBillsTheRecordedTurns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	// The run hangs in A's turn of round two, call 3: round one is recorded.
	p := &counting{next: simulated.New(simulated.Config{}), block: func(n int64) bool { return n == 3 }}
	e.startConverger(testConfig(), p)
	id := e.submit(acme, tasks.Request{Prompt: "Design a rate limiter. [sim:converge]", Type: "design"})
	require.Eventually(t, func() bool {
		rec, err := e.store.Get(t.Context(), acme, id)
		return err == nil && rec.Rounds == 1 && p.calls.Load() == 3
	}, 10*time.Second, 5*time.Millisecond)

	// The consumer gives up on the request: its copy goes to the dead-letter subject.
	stream, err := e.js.Stream(t.Context(), events.StreamConvergeCommands)
	require.NoError(t, err)
	request, err := stream.GetLastMsgForSubject(t.Context(), events.SubjectConvergeRequest)
	require.NoError(t, err)
	_, err = e.js.Publish(t.Context(), events.DeadLetterSubject(events.ConsumerConverger), request.Data)
	require.NoError(t, err)

	rec := e.waitFinished(acme, id, 10*time.Second)
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Contains(t, rec.Error, "gave up on it")
	require.EqualValues(t, tasks.StopError, rec.Result.StopReason)
	require.Equal(t, 1, rec.Result.Rounds)
	require.Positive(t, rec.Usage.TotalTokens)
	require.Equal(t, e.persistedUsage(id), rec.Usage, "the recorded turns are billed, nothing else")
	requireAgentsAddUp(t, rec.Result)
	ev := decodeData[events.ConvergeFailed](t, e.waitResultEvent(id))
	require.Equal(t, rec.Usage, ev.Usage)
	require.EqualValues(t, 3, p.calls.Load(), "ending the task called the provider for nothing")

	// A dead letter for a task that has ended changes nothing.
	_, err = e.js.Publish(t.Context(), events.DeadLetterSubject(events.ConsumerConverger), request.Data)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		c, err := e.js.Consumer(t.Context(), events.StreamDeadLetter, "converger-dead-letters")
		if err != nil {
			return false
		}
		info := c.CachedInfo()
		return info.AckFloor.Consumer == 2 && info.NumAckPending == 0
	}, 10*time.Second, 10*time.Millisecond, "both dead letters handled")
	require.Len(t, e.resultEvents()[id], 1)
	again, err := e.store.Get(t.Context(), acme, id)
	require.NoError(t, err)
	require.Equal(t, rec.FinishedAt, again.FinishedAt)
}

func TestConverger_TenantDestroyed_ItsTasksCancelledAndLateOnesNeverRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme, globex := e.tenant("acme"), e.tenant("globex")
	// The first call hangs until its run is cancelled.
	p := &counting{next: simulated.New(simulated.Config{}), block: func(n int64) bool { return n == 1 }}
	e.startConverger(testConfig(), p)
	running := e.submit(acme, tasks.Request{Prompt: "Design a rate limiter. [sim:converge]", Type: "design"})
	require.Eventually(t, func() bool { return p.calls.Load() == 1 }, 10*time.Second, 5*time.Millisecond)

	fact, err := events.NewEnvelope("convergence/provisioner", events.TypeTenantLifecycle, "", "req-destroy",
		events.TenantLifecycle{EnvID: acme, OrgID: 1, Name: "acme", State: events.StateDestroyed, PrevState: events.StateRunning, At: time.Now().UTC()})
	require.NoError(t, err)
	payload, err := json.Marshal(fact)
	require.NoError(t, err)
	_, err = e.js.Publish(t.Context(), events.LifecycleSubject(events.StateDestroyed, acme), payload)
	require.NoError(t, err)

	rec := e.waitFinished(acme, running, 10*time.Second)
	require.Equal(t, tasks.StatusCancelled, rec.Status)
	require.Equal(t, rec.Usage, e.persistedUsage(running))

	// A request of the destroyed tenant's that was still on its way is cancelled, not run.
	late := e.submit(acme, tasks.Request{Prompt: "Plan a launch. [sim:converge]", Type: "plan"})
	rec = e.waitFinished(acme, late, 10*time.Second)
	require.Equal(t, tasks.StatusCancelled, rec.Status)
	require.Zero(t, rec.Usage.TotalTokens)
	ev := decodeData[events.ConvergeFailed](t, e.waitResultEvent(late))
	require.Equal(t, "cancelled", ev.StopReason, "its converge.failed says so")
	require.Zero(t, ev.Usage.TotalTokens, "with no usage")

	// Another tenant's task runs as ever.
	other := e.submit(globex, tasks.Request{Prompt: "Plan a launch. [sim:converge]", Type: "plan"})
	require.Equal(t, tasks.StatusCompleted, e.waitFinished(globex, other, 10*time.Second).Status)
	require.EqualValues(t, 1+7, p.calls.Load(), "nothing was called for the destroyed tenant's late task")
}
