package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// RelayConfig tunes a Relay. Zero values take the defaults.
type RelayConfig struct {
	// BatchSize is how many events one database transaction claims and publishes.
	BatchSize int
	// PollInterval is how often the relay looks for events when it is not woken. Wake-ups are
	// the fast path; the poll picks up rows other processes left behind.
	PollInterval time.Duration
	// Retention is how long published rows are kept before they are deleted.
	Retention time.Duration
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
	return c
}

// Relay publishes outbox rows to JetStream in id order and marks each published after its
// PubAck. Several relays (one per process) may run against one database: each batch is claimed
// with FOR UPDATE SKIP LOCKED, so no two publish the same row at once.
type Relay struct {
	outbox *Outbox
	pool   *pgxpool.Pool
	js     jetstream.JetStream
	cfg    RelayConfig
	logger *slog.Logger

	published prometheus.Counter
	failed    prometheus.Counter
	lag       prometheus.Histogram
}

// NewRelay wires a relay for the events of ob's database; ob's commits wake it. It starts
// nothing.
func NewRelay(ob *Outbox, js jetstream.JetStream, cfg RelayConfig, logger *slog.Logger, reg prometheus.Registerer) *Relay {
	return &Relay{
		outbox: ob,
		pool:   ob.pool,
		js:     js,
		cfg:    cfg.withDefaults(),
		logger: logger.With("component", "outbox-relay"),
		published: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "outbox", Name: "published_total",
			Help: "Outbox events published to JetStream and marked published.",
		})),
		failed: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "outbox", Name: "publish_errors_total",
			Help: "Outbox events whose publish failed and will be retried.",
		})),
		lag: telemetry.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "outbox", Name: "relay_lag_seconds",
			Help:    "Time from an outbox event's commit to its PubAck.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		})),
	}
}

// Run relays events until ctx is done, then returns nil. Publish and database errors are
// logged and retried; they never end Run.
func (r *Relay) Run(ctx context.Context) error {
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	clean := time.NewTicker(10 * time.Minute)
	defer clean.Stop()
	for {
		n, err := r.RelayOnce(ctx)
		if err != nil && ctx.Err() == nil {
			r.logger.Warn("relay batch", "err", err)
		}
		if n == r.cfg.BatchSize && err == nil {
			continue // More may be waiting.
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.outbox.wake:
		case <-poll.C:
		case <-clean.C:
			if err := r.deletePublished(ctx); err != nil && ctx.Err() == nil {
				r.logger.Warn("delete published outbox rows", "err", err)
			}
		}
	}
}

type outboxRow struct {
	id        int64
	eventID   string
	subject   string
	payload   []byte
	createdAt time.Time
}

// RelayOnce claims one batch of unpublished events, publishes them, and marks those that
// JetStream acknowledged. It returns how many rows it claimed.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	rows, err := tx.Query(ctx, `
		SELECT id, event_id, subject, payload, created_at FROM outbox
		WHERE published_at IS NULL ORDER BY id LIMIT $1
		FOR UPDATE SKIP LOCKED`, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("claim batch: %w", err)
	}
	batch, err := pgx.CollectRows(rows, func(cr pgx.CollectableRow) (outboxRow, error) {
		var x outboxRow
		err := cr.Scan(&x.id, &x.eventID, &x.subject, &x.payload, &x.createdAt)
		return x, err
	})
	if err != nil {
		return 0, fmt.Errorf("read batch: %w", err)
	}
	if len(batch) == 0 {
		return 0, nil
	}

	// Publish the whole batch asynchronously, then collect the acks in order.
	futures := make([]jetstream.PubAckFuture, len(batch))
	var publishErr error
	for i, x := range batch {
		msg := &nats.Msg{Subject: x.subject, Data: x.payload, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, x.eventID)
		futures[i], publishErr = r.js.PublishMsgAsync(msg)
		if publishErr != nil {
			futures = futures[:i]
			break
		}
	}
	acked := make([]int64, 0, len(futures))
	for i, f := range futures {
		select {
		case <-f.Ok():
			acked = append(acked, batch[i].id)
			r.lag.Observe(time.Since(batch[i].createdAt).Seconds())
		case err := <-f.Err():
			publishErr = errors.Join(publishErr, fmt.Errorf("publish %s: %w", batch[i].eventID, err))
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	r.failed.Add(float64(len(batch) - len(acked)))
	if len(acked) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE outbox SET published_at = now() WHERE id = ANY($1)`, acked); err != nil {
			return 0, fmt.Errorf("mark published: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, fmt.Errorf("commit published: %w", err)
		}
		r.published.Add(float64(len(acked)))
	}
	return len(batch), publishErr
}

func (r *Relay) deletePublished(ctx context.Context) error {
	_, err := r.pool.Exec(ctx, `DELETE FROM outbox WHERE published_at < now() - $1::interval`, r.cfg.Retention)
	return err
}
