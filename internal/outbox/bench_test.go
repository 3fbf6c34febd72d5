package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/outbox"
	"github.com/convergence-dev/convergence/internal/pglocal"
	"github.com/convergence-dev/convergence/internal/pgrole"
	"github.com/convergence-dev/convergence/migrations"
	"github.com/convergence-dev/convergence/pkg/events"
)

// durablePool starts a PostgreSQL that fsyncs its commits, as a production one does, and
// returns a pool on it with the migrations applied. The test harness's servers do not fsync,
// which would flatter the raw-commit baseline.
func durablePool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	dir, err := os.MkdirTemp("", "outbox-bench-")
	require.NoError(b, err)
	require.NoError(b, os.Chmod(dir, 0o711)) // The server may run as the postgres user.
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	srv, err := pglocal.Start(b.Context(), pglocal.Config{Dir: filepath.Join(dir, "pg"), Settings: map[string]string{"max_connections": "50"}})
	require.NoError(b, err)
	b.Cleanup(func() { _ = srv.Stop(context.Background()) })
	require.NoError(b, migrations.Up(b.Context(), srv.URL()))
	// The raw baseline's table, in the API's schema: its role may write but not create tables.
	conn, err := pgx.Connect(b.Context(), srv.URL())
	require.NoError(b, err)
	// bench_events has the outbox's shape, indexes and id sequence: the write floor's table.
	_, err = conn.Exec(b.Context(), `
		CREATE TABLE api.bench_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL);
		GRANT INSERT ON api.bench_rows TO convergence_api;
		GRANT USAGE ON SEQUENCE api.bench_rows_id_seq TO convergence_api;
		CREATE TABLE api.bench_events (LIKE api.outbox INCLUDING ALL);
		GRANT INSERT ON api.bench_events TO convergence_api`)
	require.NoError(b, err)
	require.NoError(b, conn.Close(b.Context()))
	pcfg, err := pgxpool.ParseConfig(srv.URL())
	require.NoError(b, err)
	pcfg.MaxConns = benchConcurrency + 2 // Every writer has a connection; the relay has its own.
	// The API's role, as the busiest writer of events connects.
	require.NoError(b, pgrole.Configure(pcfg, pgrole.API))
	pool, err := pgxpool.NewWithConfig(b.Context(), pcfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	return pool
}

// benchConcurrency is the number of writers in every phase, so the rates compare.
const benchConcurrency = 8

// BenchmarkOutboxThroughput measures events per second committed through the outbox and relayed
// to JetStream, beside raw baselines from the same run at the same concurrency: a bare
// single-row INSERT-commit loop, a bare JetStream publish loop (each publish waits for its
// PubAck), and the write floors: the change and an outbox-shaped row committed with no relay,
// in one round trip (as Batch does) and in a transaction (as Tx does), the least any
// table-based outbox writes per event. The outbox is measured twice: through Outbox.Tx, and
// through Outbox.Batch, the way the API records converge requests. Run with a fixed count,
// e.g. -benchtime=5000x. Goals: Tx ≥ 0.5× and Batch ≥ 0.8× raw commit.
func BenchmarkOutboxThroughput(b *testing.B) {
	pool := durablePool(b)
	srv := natstest.Start(b)
	js := srv.JetStream()
	ctx := b.Context()
	payload := make([]byte, 256)
	n := b.N

	rawCommit := rate(n, func(i int) error {
		_, err := pool.Exec(ctx, `INSERT INTO bench_rows (payload) VALUES ($1)`, payload)
		return err
	})

	writeFloor := rate(n, func(i int) error {
		batch := &pgx.Batch{}
		batch.Queue(`INSERT INTO bench_rows (payload) VALUES ($1)`, payload)
		batch.Queue(`INSERT INTO bench_events (event_id, subject, payload) VALUES ($1, $2, $3)`,
			fmt.Sprintf("floor-%d", i), events.SubjectConvergeCompleted, payload)
		return pool.SendBatch(ctx, batch).Close()
	})

	txFloor := rate(n, func(i int) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO bench_rows (payload) VALUES ($1)`, payload); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO bench_events (event_id, subject, payload) VALUES ($1, $2, $3)`,
				fmt.Sprintf("tx-floor-%d", i), events.SubjectConvergeCompleted, payload)
			return err
		})
	})

	rawPublish := rate(n, func(i int) error {
		_, err := js.Publish(ctx, "tenant.lifecycle.running.1", payload)
		return err
	})

	ob := outbox.New(pool)
	relay := outbox.NewRelay(ob, js, outbox.RelayConfig{}, discard, prometheus.NewRegistry())
	rctx, stop := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(rctx) }()
	stream, err := js.Stream(ctx, events.StreamConvergeResults)
	require.NoError(b, err)

	// relayedRate writes n events with write and returns events/s from the first write to the
	// last PubAck, with the commit rate alone.
	relayedRate := func(write func(env events.Envelope) error) (relayed, committed float64) {
		info, err := stream.Info(ctx)
		require.NoError(b, err)
		want := info.State.Msgs + uint64(n)
		start := time.Now()
		committed = rate(n, func(i int) error {
			env, err := events.NewEnvelope("bench", events.TypeConvergeCompleted, "", "", events.ConvergeCompleted{TaskID: fmt.Sprint(i)})
			if err != nil {
				return err
			}
			return write(env)
		})
		for {
			info, err := stream.Info(ctx)
			require.NoError(b, err)
			if info.State.Msgs >= want {
				break
			}
			time.Sleep(time.Millisecond)
		}
		return float64(n) / time.Since(start).Seconds(), committed
	}
	// Through a transaction: BEGIN, the change, the event, COMMIT.
	txRelayed, txCommitted := relayedRate(func(env events.Envelope) error {
		return ob.Tx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO bench_rows (payload) VALUES ($1)`, payload); err != nil {
				return err
			}
			return outbox.Write(ctx, tx, events.SubjectConvergeCompleted, env)
		})
	})
	// Through a batch: the change and the event in one round trip.
	batchRelayed, batchCommitted := relayedRate(func(env events.Envelope) error {
		batch := &pgx.Batch{}
		batch.Queue(`INSERT INTO bench_rows (payload) VALUES ($1)`, payload)
		return ob.Batch(ctx, batch, events.SubjectConvergeCompleted, env)
	})
	stop()
	require.NoError(b, <-relayDone)

	b.ReportMetric(rawCommit, "raw_commit_ev/s")
	b.ReportMetric(rawPublish, "raw_publish_ev/s")
	b.ReportMetric(txRelayed, "tx_relayed_ev/s")
	b.ReportMetric(batchRelayed, "batch_relayed_ev/s")
	b.ReportMetric(txRelayed/rawCommit, "tx/raw_commit")
	b.ReportMetric(batchRelayed/rawCommit, "batch/raw_commit")
	b.ReportMetric(writeFloor/rawCommit, "write_floor/raw_commit")
	b.ReportMetric(txFloor/rawCommit, "tx_floor/raw_commit")
	b.Logf("%d writers, %d events in all: raw commit %.0f/s, raw publish %.0f/s; write floors: batch %.0f/s = %.2fx raw commit, tx %.0f/s = %.2fx",
		benchConcurrency, n, rawCommit, rawPublish, writeFloor, writeFloor/rawCommit, txFloor, txFloor/rawCommit)
	b.Logf("  outbox via Tx:    committed %.0f/s, relayed %.0f/s = %.2fx raw commit, %.2fx raw publish (goals: Tx >= 0.5x, Batch >= 0.8x raw commit)", txCommitted, txRelayed, txRelayed/rawCommit, txRelayed/rawPublish)
	b.Logf("  outbox via Batch: committed %.0f/s, relayed %.0f/s = %.2fx raw commit, %.2fx raw publish", batchCommitted, batchRelayed, batchRelayed/rawCommit, batchRelayed/rawPublish)
}

// rate runs op n times over benchConcurrency workers and returns operations per second.
func rate(n int, op func(i int) error) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchConcurrency)
	start := time.Now()
	for range benchConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		panic(err) // A benchmark's setup is broken; there is no figure to report.
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkRelayLatency measures how long an event takes from its commit to its delivery by a
// JetStream consumer, the wait a sync request or a spawn answer sits through, with
// benchConcurrency writers of one event each: each writer commits its event through
// Outbox.Batch, waits until a consumer of the stream receives it, then writes the next. The
// consumer receives an event once JetStream has stored it, about when the relay has its
// PubAck. The baseline, measured in the same run, is the same writers publishing their events
// to JetStream directly, timed from the publish to the same delivery. Both report p50-ms and p99-ms. Goal: relay p50 ≤
// 5 ms.
func BenchmarkRelayLatency(b *testing.B) {
	pool := durablePool(b)
	srv := natstest.Start(b)
	js := srv.JetStream()
	ctx := b.Context()

	// arrivals signals the writer waiting for each event id.
	var arrivals sync.Map // event id → chan struct{}
	cons, err := js.OrderedConsumer(ctx, events.StreamConvergeResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectConvergeCompleted}, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	require.NoError(b, err)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if ch, ok := arrivals.Load(m.Headers().Get(jetstream.MsgIDHeader)); ok {
			close(ch.(chan struct{}))
		}
	})
	require.NoError(b, err)
	defer cc.Stop()

	// latencies writes b.N events over benchConcurrency writers with send, and returns how long
	// each took from the instant send returns to its delivery.
	latencies := func(send func(env events.Envelope) (time.Time, error)) []time.Duration {
		var mu sync.Mutex
		var out []time.Duration
		rate(b.N, func(i int) error {
			env, err := events.NewEnvelope("bench", events.TypeConvergeCompleted, "", "", events.ConvergeCompleted{TaskID: fmt.Sprint(i)})
			if err != nil {
				return err
			}
			arrived := make(chan struct{})
			arrivals.Store(env.ID, arrived)
			defer arrivals.Delete(env.ID)
			from, err := send(env)
			if err != nil {
				return err
			}
			select {
			case <-arrived:
			case <-time.After(30 * time.Second):
				return fmt.Errorf("event %s not delivered within 30s", env.ID)
			}
			mu.Lock()
			out = append(out, time.Since(from))
			mu.Unlock()
			return nil
		})
		return out
	}

	// From the publish, which waits for the PubAck.
	bare := latencies(func(env events.Envelope) (time.Time, error) {
		payload, err := json.Marshal(env)
		if err != nil {
			return time.Time{}, err
		}
		start := time.Now()
		_, err = js.Publish(ctx, events.SubjectConvergeCompleted, payload, jetstream.WithMsgID(env.ID))
		return start, err
	})

	ob := outbox.New(pool)
	relay := outbox.NewRelay(ob, js, outbox.RelayConfig{}, discard, prometheus.NewRegistry())
	rctx, stop := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(rctx) }()
	// From the commit.
	relayed := latencies(func(env events.Envelope) (time.Time, error) {
		err := ob.Batch(ctx, &pgx.Batch{}, events.SubjectConvergeCompleted, env)
		return time.Now(), err
	})
	stop()
	require.NoError(b, <-relayDone)

	b.ReportMetric(ms(percentile(relayed, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(relayed, 99)), "p99-ms")
	b.ReportMetric(ms(percentile(bare, 50)), "bare-p50-ms")
	b.ReportMetric(ms(percentile(bare, 99)), "bare-p99-ms")
	b.Logf("%d writers, %d events: commit to delivery p50 %.2f ms, p99 %.2f ms; bare publish to delivery p50 %.2f ms, p99 %.2f ms (goal: p50 <= 5 ms)",
		benchConcurrency, b.N, ms(percentile(relayed, 50)), ms(percentile(relayed, 99)), ms(percentile(bare, 50)), ms(percentile(bare, 99)))
}

// percentile returns the p-th percentile of d, which it sorts.
func percentile(d []time.Duration, p int) time.Duration {
	slices.Sort(d)
	return d[(len(d)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
