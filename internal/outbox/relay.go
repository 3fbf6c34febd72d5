package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergence-dev/convergence/internal/telemetry"
	"github.com/convergence-dev/convergence/pkg/events"
)

// RelayConfig tunes a Relay. Zero values take the defaults.
type RelayConfig struct {
	// BatchSize is how many events one database transaction claims and publishes: at most
	// 1000, the largest atomic batch JetStream takes by default.
	BatchSize int
	// PollInterval is how often the relay looks for events when it is not woken. Wake-ups are
	// the fast path; the poll picks up rows other processes left behind.
	PollInterval time.Duration
	// Retention is how long published rows are kept before they are deleted.
	Retention time.Duration
	// PublishTimeout bounds the wait for a batch's PubAcks. Rows left unacknowledged stay
	// unpublished and go again with the next batch.
	PublishTimeout time.Duration
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	c.BatchSize = min(c.BatchSize, maxAtomicBatch)
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 10 * time.Second
	}
	return c
}

// Relay publishes outbox rows to JetStream in id order and marks each published after its
// PubAck. Several relays (one per process) may run against one database: they take turns, one
// batch each, under a transaction-level advisory lock, so no two publish the same row and the
// batches go out in id order. Turns cost no row locks: a claimed row is written once, by its
// mark. One relay publishes far faster than the database commits events, so turns lose
// nothing.
type Relay struct {
	outbox *Outbox
	pool   *pgxpool.Pool
	js     jetstream.JetStream
	cfg    RelayConfig
	logger *slog.Logger

	mu     sync.Mutex
	atomic map[string]bool // stream name → accepts atomic batches

	// traced: the process exports traces, so events' trace contexts are read and spanned.
	traced bool

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
		atomic: map[string]bool{},
		traced: telemetry.TracingEnabled(),
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
	// trace holds the event's type and trace context, read while tracing is on.
	trace events.Envelope
}

// RelayOnce claims one batch of unpublished events, publishes them, and marks those that
// JetStream acknowledged. It returns how many rows it claimed.
//
// A batch costs two round trips to the database: the claim (BEGIN, the relays' turn, the
// SELECT) and the mark (UPDATE, COMMIT), each sent as one pipeline. The mark commits without
// waiting for its WAL to reach the disk (synchronous_commit off): it is bookkeeping that a
// crash may lose, exactly as it loses the marks of a relay that dies between PubAck and
// commit, and then the rows go again and JetStream drops the repeats by their Nats-Msg-Id.
// The events themselves were committed durably by their writers.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("acquire: %w", err)
	}
	defer conn.Release()
	committed := false
	defer func() {
		if !committed {
			// Ends the transaction if it began; a connection left in one is closed on release.
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	// The lock is held until the transaction ends; the claim's snapshot, taken after it, sees
	// the marks of the relay that had the turn before. It is per schema: the relays of one
	// service's outbox take turns, and other services' relays do not wait for them.
	claim := &pgx.Batch{}
	claim.Queue(`BEGIN`)
	claim.Queue(`SET LOCAL synchronous_commit = off`)
	claim.Queue(`SELECT pg_advisory_xact_lock(hashtext('outbox_relay:' || current_schema()))`)
	rows := claim.Queue(`
		SELECT id, event_id, subject, payload, created_at FROM outbox
		WHERE published_at IS NULL ORDER BY id LIMIT $1`, r.cfg.BatchSize)
	var batch []outboxRow
	rows.Query(func(rs pgx.Rows) error {
		batch, err = pgx.CollectRows(rs, func(cr pgx.CollectableRow) (outboxRow, error) {
			var x outboxRow
			err := cr.Scan(&x.id, &x.eventID, &x.subject, &x.payload, &x.createdAt)
			return x, err
		})
		return err
	})
	if err := conn.SendBatch(ctx, claim).Close(); err != nil {
		return 0, fmt.Errorf("claim batch: %w", err)
	}
	if len(batch) == 0 {
		return 0, nil
	}
	if r.traced {
		for i := range batch {
			batch[i].trace = traceOf(batch[i].payload)
		}
	}

	acked, publishErr := r.publish(ctx, batch)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	r.failed.Add(float64(len(batch) - len(acked)))
	if len(acked) > 0 {
		mark := &pgx.Batch{}
		mark.Queue(`UPDATE outbox SET published_at = now() WHERE id = ANY($1)`, acked)
		mark.Queue(`COMMIT`)
		if err := conn.SendBatch(ctx, mark).Close(); err != nil {
			return 0, fmt.Errorf("mark published: %w", err)
		}
		committed = true
		r.published.Add(float64(len(acked)))
	}
	return len(batch), publishErr
}

// maxAtomicBatch is the most messages JetStream takes in one atomic batch by default.
const maxAtomicBatch = 1000

// minAtomicBatch is the fewest rows for one stream that go as an atomic batch (see publish).
const minAtomicBatch = 32

// inFlight is a publish waiting for its PubAck: one message, or an atomic batch of rows
// acknowledged as a whole by its commit message.
type inFlight struct {
	rows   []outboxRow
	future jetstream.PubAckFuture
	atomic bool
}

// publish sends batch and returns the ids of the rows JetStream stored. minAtomicBatch rows or
// more bound for a stream that accepts atomic batches go as one batch, stored with a single
// fsync; the other rows go one message at a time. A refused batch (one of its events was
// published before, by a relay that died before marking it) is sent again message by message,
// in order, and JetStream drops the repeats by their Nats-Msg-Id.
func (r *Relay) publish(ctx context.Context, batch []outboxRow) ([]int64, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, r.cfg.PublishTimeout, fmt.Errorf("no PubAck within %s", r.cfg.PublishTimeout))
	defer cancel()

	groups, singles := byStream(batch)
	var flights []inFlight
	for stream, rows := range groups {
		// A batch costs the server a store of its own: on a one-copy file stream, a directory
		// with its own fsyncs, about 10 ms here, where a message alone costs one fsync. So the
		// few events of a relay that keeps up go one by one, at once, and batches only pay
		// once a relay that fell behind has many to send.
		if len(rows) < minAtomicBatch || !r.acceptsAtomic(ctx, stream) {
			singles = append(singles, rows...)
			continue
		}
		f, err := r.sendAtomic(rows)
		if err != nil {
			singles = append(singles, rows...)
			continue
		}
		flights = append(flights, f)
	}
	flights, err := r.sendEach(singles, flights)
	acked, refused, waitErr := r.wait(ctx, flights)
	err = errors.Join(err, waitErr)
	if len(refused) > 0 {
		flights, sendErr := r.sendEach(refused, nil)
		again, _, waitErr := r.wait(ctx, flights)
		acked = append(acked, again...)
		err = errors.Join(err, sendErr, waitErr)
	}
	return acked, err
}

// byStream groups the rows of batch by the stream that stores them, and returns the rows no
// platform stream stores apart. Both keep id order.
func byStream(batch []outboxRow) (groups map[string][]outboxRow, others []outboxRow) {
	groups = map[string][]outboxRow{}
	for _, x := range batch {
		if stream, ok := events.StreamFor(x.subject); ok {
			groups[stream] = append(groups[stream], x)
		} else {
			others = append(others, x)
		}
	}
	return groups, others
}

// acceptsAtomic reports whether stream accepts atomic batches. The answer is read from the
// server once: a server too old to know atomic batches does not report them allowed. When the
// server cannot answer, the answer is no, and it is asked again next time.
func (r *Relay) acceptsAtomic(ctx context.Context, stream string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	allowed, known := r.atomic[stream]
	if !known {
		s, err := r.js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		allowed = s.CachedInfo().Config.AllowAtomicPublish
		r.atomic[stream] = allowed
	}
	return allowed
}

// sendAtomic publishes rows as one atomic batch: every message but the last without a reply,
// the last with the commit header, whose PubAck answers for the batch.
func (r *Relay) sendAtomic(rows []outboxRow) (inFlight, error) {
	id := nuid.Next()
	batched := func(i int) *nats.Msg {
		msg := message(rows[i])
		msg.Header.Set(headerBatchID, id)
		msg.Header.Set(headerBatchSequence, strconv.Itoa(i+1))
		return msg
	}
	last := len(rows) - 1
	for i := range last {
		if err := r.js.Conn().PublishMsg(batched(i)); err != nil {
			return inFlight{}, err
		}
	}
	commit := batched(last)
	commit.Header.Set(headerBatchCommit, "1")
	f, err := r.js.PublishMsgAsync(commit)
	return inFlight{rows: rows, future: f, atomic: true}, err
}

// Headers of JetStream's atomic batch publish.
const (
	headerBatchID       = "Nats-Batch-Id"
	headerBatchSequence = "Nats-Batch-Sequence"
	headerBatchCommit   = "Nats-Batch-Commit"
)

// sendEach publishes rows one message at a time and appends them to flights. It stops at the
// first row it cannot send; the rest wait for the next batch.
func (r *Relay) sendEach(rows []outboxRow, flights []inFlight) ([]inFlight, error) {
	for _, x := range rows {
		f, err := r.js.PublishMsgAsync(message(x))
		if err != nil {
			return flights, fmt.Errorf("publish %s: %w", x.eventID, err)
		}
		flights = append(flights, inFlight{rows: []outboxRow{x}, future: f})
	}
	return flights, nil
}

// wait collects the PubAcks of flights until ctx, bounded by the publish timeout, ends. It
// returns the ids of the rows stored, and the rows of the atomic batches JetStream refused.
func (r *Relay) wait(ctx context.Context, flights []inFlight) (acked []int64, refused []outboxRow, err error) {
	for _, f := range flights {
		select {
		case <-f.future.Ok():
			for _, x := range f.rows {
				acked = append(acked, x.id)
				r.relayed(x)
			}
		case pubErr := <-f.future.Err():
			if f.atomic {
				r.logger.Info("atomic batch refused; publishing its events one by one", "events", len(f.rows), "err", pubErr)
				refused = append(refused, f.rows...)
				continue
			}
			err = errors.Join(err, fmt.Errorf("publish %s: %w", f.rows[0].eventID, pubErr))
		case <-ctx.Done():
			return acked, refused, errors.Join(err, context.Cause(ctx))
		}
	}
	return acked, refused, err
}

// message is the JetStream message of x, deduplicated by its event id. The event's trace
// context, when read, goes in the W3C headers too, for consumers that trace by headers.
func message(x outboxRow) *nats.Msg {
	msg := &nats.Msg{Subject: x.subject, Data: x.payload, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, x.eventID)
	if x.trace.TraceParent != "" {
		msg.Header.Set("traceparent", x.trace.TraceParent)
		if x.trace.TraceState != "" {
			msg.Header.Set("tracestate", x.trace.TraceState)
		}
	}
	return msg
}

// traceOf reads the type and trace context of an event's payload.
func traceOf(payload []byte) events.Envelope {
	var tc struct {
		Type        string `json:"type"`
		TraceParent string `json:"traceparent"`
		TraceState  string `json:"tracestate"`
	}
	_ = json.Unmarshal(payload, &tc) // The writer encoded it; without a trace context, the event is not traced.
	return events.Envelope{Type: tc.Type, TraceParent: tc.TraceParent, TraceState: tc.TraceState}
}

// relayed records that JetStream stored x: the time since its commit and, for an event with a
// trace context, a producer span in that trace from the commit to the PubAck (whose trace ID
// is the lag's exemplar).
func (r *Relay) relayed(x outboxRow) {
	now := time.Now()
	ctx := x.trace.TraceContext(context.Background())
	if x.trace.TraceParent != "" {
		var span trace.Span
		ctx, span = telemetry.Tracer().Start(ctx, "publish "+x.trace.Type,
			trace.WithSpanKind(trace.SpanKindProducer), trace.WithTimestamp(x.createdAt),
			trace.WithAttributes(attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", x.subject), attribute.String("messaging.message.id", x.eventID)))
		span.End(trace.WithTimestamp(now))
	}
	telemetry.Observe(ctx, r.lag, now.Sub(x.createdAt).Seconds())
}

func (r *Relay) deletePublished(ctx context.Context) error {
	_, err := r.pool.Exec(ctx, `DELETE FROM outbox WHERE published_at < now() - $1::interval`, r.cfg.Retention)
	return err
}
