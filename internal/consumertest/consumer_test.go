package consumertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var discard = slog.New(slog.DiscardHandler)

// publish publishes a completed-task event and returns its event ID.
func publish(t *testing.T, js jetstream.JetStream, taskID string) string {
	t.Helper()
	env, err := events.NewEnvelope("test", events.TypeConvergeCompleted, taskID, "", events.ConvergeCompleted{TaskID: taskID})
	require.NoError(t, err)
	publishRaw(t, js, mustJSON(t, env))
	return env.ID
}

func publishRaw(t *testing.T, js jetstream.JetStream, data []byte) {
	t.Helper()
	_, err := js.Publish(t.Context(), events.SubjectConvergeCompleted, data)
	require.NoError(t, err)
}

// start runs a consumer on the results stream until the test ends.
func start(t *testing.T, js jetstream.JetStream, cfg consumer.Config, h consumer.Handler[events.ConvergeCompleted]) {
	t.Helper()
	cfg.Stream = events.StreamConvergeResults
	cfg.Subjects = []string{events.SubjectConvergeCompleted}
	c := consumer.New(js, cfg, h, discard, telemetry.NewConsumerMetrics(prometheus.NewRegistry()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestConsumer_PoisonMessage_DeadLetteredWhileOthersFlow(t *testing.T) {
	t.Parallel()
	js := natstest.Start(t).JetStream()

	var handled atomic.Int32
	start(t, js, consumer.Config{Name: "poison", MaxDeliver: 3, Backoff: func(uint64) time.Duration { return 5 * time.Millisecond }},
		func(_ context.Context, e consumer.Event[events.ConvergeCompleted]) error {
			switch e.Data.TaskID {
			case "always-fails":
				return errors.New("transient, forever")
			case "permanent":
				return consumer.Permanent(errors.New("cannot ever succeed"))
			}
			handled.Add(1)
			return nil
		})

	publishRaw(t, js, []byte("not an event"))
	publish(t, js, "always-fails")
	publish(t, js, "permanent")
	for i := range 20 {
		publish(t, js, fmt.Sprint("ok-", i))
	}
	require.Eventually(t, func() bool { return handled.Load() == 20 }, 10*time.Second, 10*time.Millisecond)

	dlq, err := js.Stream(t.Context(), events.StreamDeadLetter)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dlq.Info(t.Context())
		return err == nil && info.State.Msgs == 3
	}, 10*time.Second, 10*time.Millisecond)

	reasons := map[string]string{}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := dlq.GetMsg(t.Context(), seq)
		require.NoError(t, err)
		require.Equal(t, events.DeadLetterSubject("poison"), m.Subject)
		require.Equal(t, events.SubjectConvergeCompleted, m.Header.Get(consumer.HeaderDLQSubject))
		reasons[string(m.Data)] = m.Header.Get(consumer.HeaderDLQDeliveries)
	}
	require.Len(t, reasons, 3)
	require.Equal(t, "1", reasons["not an event"], "an undecodable message is dead-lettered at once")

	// The work queue is empty: nothing is stuck behind the poison.
	info, err := js.Consumer(t.Context(), events.StreamConvergeResults, "poison")
	require.NoError(t, err)
	ci, err := info.Info(t.Context())
	require.NoError(t, err)
	require.Zero(t, ci.NumPending)
	require.Zero(t, ci.NumAckPending)
}

func TestConsumer_HandlersLongerThanAckWait_HeartbeatsPreventRedelivery(t *testing.T) {
	t.Parallel()
	js := natstest.Start(t).JetStream()

	const n = 20 // Handled at once, all kept alive by the consumer's one heartbeat loop.
	var calls atomic.Int32
	var wg sync.WaitGroup
	wg.Add(n)
	start(t, js, consumer.Config{Name: "slow", AckWait: 600 * time.Millisecond, Concurrency: n},
		func(ctx context.Context, e consumer.Event[events.ConvergeCompleted]) error {
			calls.Add(1)
			select {
			case <-time.After(2 * time.Second): // Over three ack deadlines.
			case <-ctx.Done():
				return ctx.Err()
			}
			wg.Done()
			return nil
		})
	for i := range n {
		publish(t, js, fmt.Sprint("slow-", i))
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(15 * time.Second):
		t.Fatal("handlers did not finish")
	}
	require.EqualValues(t, n, calls.Load(), "no redelivery while the handlers work")
}

func TestBatch_HandlerLongerThanAckWait_HeartbeatsPreventRedelivery(t *testing.T) {
	t.Parallel()
	js := natstest.Start(t).JetStream()
	var handled, batches atomic.Int32
	b := consumer.NewBatch(js, consumer.BatchConfig{
		Config: consumer.Config{Name: "slow-batch", Stream: events.StreamConvergeResults, Subjects: []string{events.SubjectConvergeCompleted},
			AckWait: 600 * time.Millisecond},
		BatchSize: 10, IdleWait: 50 * time.Millisecond,
	}, func(ctx context.Context, batch []consumer.Event[events.ConvergeCompleted]) error {
		if batches.Add(1) == 1 { // The first batch is slow; a redelivery would be handled at once.
			select {
			case <-time.After(2 * time.Second): // Over three ack deadlines.
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		handled.Add(int32(len(batch)))
		return nil
	}, discard, nil)
	for i := range 10 {
		publish(t, js, fmt.Sprint("slow-", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.Eventually(t, func() bool { return handled.Load() >= 10 }, 15*time.Second, 10*time.Millisecond)
	time.Sleep(time.Second) // A redelivery, had the heartbeats stopped, would come within an ack deadline.
	require.EqualValues(t, 10, handled.Load(), "no redelivery while the handler works")
}

func TestExponentialBackoff_DoublesUpToLimit(t *testing.T) {
	t.Parallel()
	b := consumer.ExponentialBackoff(100*time.Millisecond, time.Second)
	for n, want := range map[uint64]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		require.Equal(t, want, b(n), "delivery %d", n)
	}
}

func TestBatch_PermanentFailure_NarrowedToTheBadEventWhileTheRestIsAcked(t *testing.T) {
	t.Parallel()
	js := natstest.Start(t).JetStream()
	var mu sync.Mutex
	var batches [][]string
	handled := map[string]int{}
	b := consumer.NewBatch(js, consumer.BatchConfig{
		Config: consumer.Config{Name: "batched", Stream: events.StreamConvergeResults, Subjects: []string{events.SubjectConvergeCompleted},
			MaxDeliver: 3, Backoff: func(uint64) time.Duration { return 5 * time.Millisecond }},
		BatchSize: 50, IdleWait: 50 * time.Millisecond,
	}, func(_ context.Context, batch []consumer.Event[events.ConvergeCompleted]) error {
		mu.Lock()
		defer mu.Unlock()
		var ids []string
		for _, e := range batch {
			ids = append(ids, e.Data.TaskID)
		}
		batches = append(batches, ids)
		for _, id := range ids {
			if id == "bad" {
				return consumer.Permanent(errors.New("this event cannot be recorded"))
			}
		}
		for _, id := range ids {
			handled[id]++
		}
		return nil
	}, discard, nil)
	for i := range 10 {
		publish(t, js, fmt.Sprint("ok-", i))
	}
	publish(t, js, "bad")
	publishRaw(t, js, []byte("not an event"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	dlq, err := js.Stream(t.Context(), events.StreamDeadLetter)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dlq.Info(t.Context())
		return err == nil && info.State.Msgs == 2
	}, 10*time.Second, 10*time.Millisecond, "the bad event and the undecodable message are dead-lettered")
	natstest.WaitDrained(t, js, events.StreamConvergeResults, "batched", 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, handled, 10)
	for id, n := range handled {
		require.Equal(t, 1, n, "%s recorded once", id)
	}
	require.Greater(t, len(batches[0]), 1, "the events came as a batch")
}
