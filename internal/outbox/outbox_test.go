package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pgtest"
	"github.com/convergence-dev/convergence/pkg/events"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}

var discard = slog.New(slog.DiscardHandler)

// writeEvents commits n events through the outbox, one transaction each, as a service would.
func writeEvents(t *testing.T, pool *pgxpool.Pool, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		env, err := events.NewEnvelope("test", events.TypeConvergeCompleted, fmt.Sprint(i), "", events.ConvergeCompleted{TaskID: fmt.Sprint(i)})
		require.NoError(t, err)
		ids[i] = env.ID
		err = outbox.New(pool).Tx(t.Context(), func(tx pgx.Tx) error {
			return outbox.Write(t.Context(), tx, events.SubjectConvergeCompleted, env)
		})
		require.NoError(t, err)
	}
	return ids
}

// streamIDs returns the event IDs stored in the results stream, in stream order.
func streamIDs(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	return idsIn(t, js, events.StreamConvergeResults)
}

// idsIn returns the event IDs stored in stream, in stream order.
func idsIn(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	ctx := t.Context()
	s, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		env, err := events.Decode(m.Data)
		require.NoError(t, err)
		ids = append(ids, env.ID)
	}
	return ids
}

func unpublished(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n))
	return n
}

// event returns a new event, as a test writes it.
func event(t *testing.T) events.Envelope {
	t.Helper()
	env, err := events.NewEnvelope("test", events.TypeConvergeCompleted, "x", "", events.ConvergeCompleted{TaskID: "x"})
	require.NoError(t, err)
	return env
}

func TestRelay_ProcessDiedBetweenCommitAndPublish_DeliversEachEventOnceAfterRestart(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	js := natstest.Start(t).JetStream()

	// The "process" committed its events and died before any relay ran.
	ids := writeEvents(t, pool, 25)
	require.Equal(t, 25, unpublished(t, pool))

	// After the restart, a relay publishes them all.
	relay := outbox.NewRelay(outbox.New(pool), js, outbox.RelayConfig{BatchSize: 10}, discard, prometheus.NewRegistry())
	for unpublished(t, pool) > 0 {
		_, err := relay.RelayOnce(t.Context())
		require.NoError(t, err)
	}
	require.Equal(t, ids, streamIDs(t, js))

	// Died again, this time after publishing and before marking: the rows are republished and
	// JetStream drops the repeats by their Nats-Msg-Id.
	_, err := pool.Exec(t.Context(), `UPDATE outbox SET published_at = NULL WHERE id % 2 = 0`)
	require.NoError(t, err)
	for unpublished(t, pool) > 0 {
		_, err := relay.RelayOnce(t.Context())
		require.NoError(t, err)
	}
	require.Equal(t, ids, streamIDs(t, js), "each event exactly once, in order")
}

func TestWrite_RolledBackTransaction_PublishesNothing(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	js := natstest.Start(t).JetStream()

	env := event(t)
	tx, err := pool.Begin(t.Context())
	require.NoError(t, err)
	require.NoError(t, outbox.Write(t.Context(), tx, events.SubjectConvergeCompleted, env))
	require.NoError(t, tx.Rollback(t.Context()))

	relay := outbox.NewRelay(outbox.New(pool), js, outbox.RelayConfig{}, discard, prometheus.NewRegistry())
	n, err := relay.RelayOnce(t.Context())
	require.NoError(t, err)
	require.Zero(t, n)
	require.Empty(t, streamIDs(t, js))
}

func TestWrite_InvalidEnvelope_Rejected(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		return outbox.Write(t.Context(), tx, events.SubjectConvergeCompleted, events.Envelope{})
	})
	require.ErrorContains(t, err, "outbox event")
}

func TestRelay_Run_WokenByCommitNotPoll(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	js := natstest.Start(t).JetStream()

	// With an hour between polls, only the commit's wake-up can start a batch in time.
	ob := outbox.New(pool)
	relay := outbox.NewRelay(ob, js, outbox.RelayConfig{PollInterval: time.Hour}, discard, prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	time.Sleep(50 * time.Millisecond) // Let the relay finish its first, empty batch.

	var ids []string
	for i := range 3 {
		env, err := events.NewEnvelope("test", events.TypeConvergeCompleted, fmt.Sprint(i), "", events.ConvergeCompleted{TaskID: fmt.Sprint(i)})
		require.NoError(t, err)
		require.NoError(t, ob.Tx(t.Context(), func(tx pgx.Tx) error {
			return outbox.Write(t.Context(), tx, events.SubjectConvergeCompleted, env)
		}))
		ids = append(ids, env.ID)
	}
	require.Eventually(t, func() bool { return len(streamIDs(t, js)) == 3 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, ids, streamIDs(t, js))
}

func TestJetStream_RestartOnSameStore_KeepsEveryAcknowledgedEvent(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js := srv.JetStream()

	var acked []string
	for i := range 50 {
		env, err := events.NewEnvelope("test", events.TypeConvergeCompleted, fmt.Sprint(i), "", events.ConvergeCompleted{TaskID: fmt.Sprint(i)})
		require.NoError(t, err)
		payload, err := json.Marshal(env)
		require.NoError(t, err)
		_, err = js.Publish(t.Context(), events.SubjectConvergeCompleted, payload, jetstream.WithMsgID(env.ID))
		require.NoError(t, err)
		acked = append(acked, env.ID)
	}
	srv.Restart()
	js = srv.JetStream()
	require.Equal(t, acked, streamIDs(t, js))
}

func TestBatch_ChangeAndEventCommitTogetherOrNotAtAll(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	_, err := pool.Exec(t.Context(), `CREATE TABLE things (name TEXT PRIMARY KEY)`)
	require.NoError(t, err)
	ob := outbox.New(pool)

	b := &pgx.Batch{}
	b.Queue(`INSERT INTO things (name) VALUES ('a')`)
	require.NoError(t, ob.Batch(t.Context(), b, events.SubjectConvergeCompleted, event(t)))
	require.Equal(t, 1, unpublished(t, pool))

	// The change fails (a duplicate key): its event must not be recorded either.
	b = &pgx.Batch{}
	b.Queue(`INSERT INTO things (name) VALUES ('a')`)
	require.Error(t, ob.Batch(t.Context(), b, events.SubjectConvergeCompleted, event(t)))
	require.Equal(t, 1, unpublished(t, pool), "the event of a failed change was recorded")

	// The event fails (its ID is taken): the change must not stay either.
	dup := event(t)
	b = &pgx.Batch{}
	b.Queue(`INSERT INTO things (name) VALUES ('b')`)
	require.NoError(t, ob.Batch(t.Context(), b, events.SubjectConvergeCompleted, dup))
	b = &pgx.Batch{}
	b.Queue(`INSERT INTO things (name) VALUES ('c')`)
	require.Error(t, ob.Batch(t.Context(), b, events.SubjectConvergeCompleted, dup))
	var things int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM things`).Scan(&things))
	require.Equal(t, 2, things, "a change whose event failed was committed")
}

func TestTx_ChangeAndEventsCommitTogetherOrNotAtAll(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	_, err := pool.Exec(t.Context(), `CREATE TABLE things (name TEXT PRIMARY KEY)`)
	require.NoError(t, err)
	// One connection: each transaction must hand it back idle, or the next would wait for ever.
	cfg := pool.Config()
	cfg.MaxConns = 1
	one, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(one.Close)
	ob := outbox.New(one)
	change := func(name string, envs ...events.Envelope) func(tx pgx.Tx) error {
		return func(tx pgx.Tx) error {
			if _, err := tx.Exec(t.Context(), `INSERT INTO things (name) VALUES ($1)`, name); err != nil {
				return err
			}
			for _, env := range envs {
				if err := outbox.Write(t.Context(), tx, events.SubjectConvergeCompleted, env); err != nil {
					return err
				}
			}
			return nil
		}
	}
	things := func() (n int) {
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM things`).Scan(&n))
		return n
	}

	first, second := event(t), event(t)
	require.NoError(t, ob.Tx(t.Context(), change("a", first, second)))
	rows, err := pool.Query(t.Context(), `SELECT event_id FROM outbox ORDER BY id`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{first.ID, second.ID}, ids, "both events, in the order written")
	require.Equal(t, 1, things())

	// The change fails (a duplicate key): its event must not be recorded either.
	require.Error(t, ob.Tx(t.Context(), change("a", event(t))))
	require.Equal(t, 2, unpublished(t, pool), "the event of a failed change was recorded")

	// The event fails at the commit (its ID is taken): the change must not stay either.
	err = ob.Tx(t.Context(), change("b", event(t), first))
	require.ErrorContains(t, err, "commit outbox transaction")
	require.Equal(t, 1, things(), "a change whose event failed was committed")
	require.Equal(t, 2, unpublished(t, pool), "an event of a failed transaction was recorded")

	// A function that panics leaves nothing behind, and the connection goes back to the pool.
	require.Panics(t, func() {
		_ = ob.Tx(t.Context(), func(tx pgx.Tx) error {
			_ = change("p", event(t))(tx)
			panic("the caller's bug")
		})
	})
	require.Equal(t, 1, things(), "the change of a panicking function was committed")

	// An event written in a savepoint is inserted there, and commits with the transaction.
	inSavepoint := event(t)
	require.NoError(t, ob.Tx(t.Context(), func(tx pgx.Tx) error {
		return pgx.BeginFunc(t.Context(), tx, change("c", inSavepoint))
	}))
	require.Equal(t, 2, things())
	require.Equal(t, 3, unpublished(t, pool))
}

func TestRelay_ManyEventsOfAStream_StoredAsOneAtomicBatch_AFewOneByOne_EachInOrder(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	js := natstest.Start(t).JetStream()
	ob := outbox.New(pool)
	results := writeEvents(t, pool, 5)
	var lifecycle []string
	for range outbox.MinAtomicBatch {
		env, err := events.NewEnvelope("test", events.TypeTenantLifecycle, "", "", events.TenantLifecycle{EnvID: 7, OrgID: 1, State: events.StateRunning, At: time.Now()})
		require.NoError(t, err)
		require.NoError(t, ob.Tx(t.Context(), func(tx pgx.Tx) error {
			return outbox.Write(t.Context(), tx, events.LifecycleSubject(events.StateRunning, 7), env)
		}))
		lifecycle = append(lifecycle, env.ID)
	}

	relay := outbox.NewRelay(ob, js, outbox.RelayConfig{}, discard, prometheus.NewRegistry())
	n, err := relay.RelayOnce(t.Context())
	require.NoError(t, err)
	require.Equal(t, 5+outbox.MinAtomicBatch, n)
	require.Zero(t, unpublished(t, pool))
	require.Equal(t, results, streamIDs(t, js))
	require.Equal(t, []string{""}, batchIDs(t, js, events.StreamConvergeResults, 5), "a few events go one by one")

	require.Equal(t, lifecycle, idsIn(t, js, events.StreamTenantLifecycle))
	ids := batchIDs(t, js, events.StreamTenantLifecycle, len(lifecycle))
	require.Len(t, ids, 1, "one atomic batch for the stream")
	require.NotContains(t, ids, "")
}

// batchIDs returns the distinct atomic batch IDs of the first n messages of stream, "" for a
// message published alone.
func batchIDs(t *testing.T, js jetstream.JetStream, stream string, n int) []string {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	require.NoError(t, err)
	var ids []string
	for seq := range uint64(n) {
		m, err := s.GetMsg(t.Context(), seq+1)
		require.NoError(t, err)
		if id := m.Header.Get("Nats-Batch-Id"); !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

func TestRelay_StreamWithoutAtomicBatches_PublishesOneByOne(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	js := natstest.Start(t).JetStream()
	s, err := js.Stream(t.Context(), events.StreamConvergeResults)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.AllowAtomicPublish = false // as on a server that predates atomic batches
	_, err = js.UpdateStream(t.Context(), cfg)
	require.NoError(t, err)

	ids := writeEvents(t, pool, outbox.MinAtomicBatch) // enough for a batch, where the stream takes them
	relay := outbox.NewRelay(outbox.New(pool), js, outbox.RelayConfig{}, discard, prometheus.NewRegistry())
	_, err = relay.RelayOnce(t.Context())
	require.NoError(t, err)
	require.Zero(t, unpublished(t, pool))
	require.Equal(t, ids, streamIDs(t, js))
	require.Equal(t, []string{""}, batchIDs(t, js, events.StreamConvergeResults, len(ids)))
}

func TestRelay_BrokerDown_GivesUpAfterPublishTimeoutAndPublishesOnceLater(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	srv := natstest.Start(t)
	js := srv.JetStream()
	ids := writeEvents(t, pool, 5)
	relay := outbox.NewRelay(outbox.New(pool), js, outbox.RelayConfig{PublishTimeout: 300 * time.Millisecond}, discard, prometheus.NewRegistry())

	srv.Shutdown()
	_, err := relay.RelayOnce(t.Context())
	require.ErrorContains(t, err, "no PubAck within 300ms")
	require.Equal(t, 5, unpublished(t, pool), "nothing is marked without its PubAck")

	srv.Restart()
	require.Eventually(t, func() bool {
		_, err := relay.RelayOnce(t.Context())
		return err == nil && unpublished(t, pool) == 0
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, ids, streamIDs(t, js), "each event exactly once, in order")
}

func TestRelay_TwoRelaysOnOneDatabase_PublishEachEventOnce(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	srv := natstest.Start(t)
	ids := writeEvents(t, pool, 300)

	var wg sync.WaitGroup
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	errs := make([]error, len(regs))
	for i, reg := range regs {
		relay := outbox.NewRelay(outbox.New(pool), srv.JetStream(), outbox.RelayConfig{BatchSize: 20}, discard, reg)
		wg.Go(func() {
			for {
				n, err := relay.RelayOnce(t.Context())
				if n == 0 || err != nil {
					errs[i] = err
					break
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.Zero(t, unpublished(t, pool))
	require.Equal(t, ids, streamIDs(t, srv.JetStream()), "each event once, in order")
	published := counter(t, regs[0], "convergence_outbox_published_total") + counter(t, regs[1], "convergence_outbox_published_total")
	require.Equal(t, len(ids), int(published), "no row was published by both relays")
}

// counter returns the value of the counter name in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
