package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergence-dev/convergence/pkg/events"
)

// tracerName names the tracer of the consumers' spans.
const tracerName = "github.com/convergence-dev/convergence/pkg/events/consumer"

// Event is what a handler receives: the envelope and its decoded data.
type Event[T any] struct {
	Envelope events.Envelope
	Data     T
	// Delivery counts deliveries of this message, starting at 1.
	Delivery uint64
}

// Handler handles one event. See the package documentation for how its result is acknowledged.
type Handler[T any] func(ctx context.Context, e Event[T]) error

// Delivery defaults of a consumer: how long a message may go unacknowledged (handlers of long
// work send InProgress heartbeats well inside it) and how many times it is delivered before
// it is dead-lettered.
const (
	DefaultAckWait    = 30 * time.Second
	DefaultMaxDeliver = 8
)

// Config describes a durable consumer and how its handler runs.
type Config struct {
	// Name is the durable consumer's name; it also names metrics, logs and the dead-letter
	// subject.
	Name     string
	Stream   string
	Subjects []string
	// Concurrency is how many messages are handled at once; it also bounds how many are pulled
	// ahead, so no message waits out its ack deadline in a local buffer. Default 1.
	Concurrency int
	// MaxDeliver is how many deliveries a message gets before it is dead-lettered.
	MaxDeliver int
	// AckWait is how long a delivery may go unacknowledged; heartbeats extend it.
	AckWait time.Duration
	// Backoff is the delay before delivery n+1 after delivery n failed. Default: 250ms doubling
	// up to 30s.
	Backoff func(n uint64) time.Duration
}

func (c Config) withDefaults() Config {
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.Backoff == nil {
		c.Backoff = ExponentialBackoff(250*time.Millisecond, 30*time.Second)
	}
	return c
}

// ExponentialBackoff returns base·2^(n-1), capped at limit.
func ExponentialBackoff(base, limit time.Duration) func(uint64) time.Duration {
	return func(n uint64) time.Duration {
		d := base
		for i := uint64(1); i < n && d < limit; i++ {
			d *= 2
		}
		return min(d, limit)
	}
}

// Consumer runs a Handler on a durable JetStream consumer.
type Consumer[T any] struct {
	js       jetstream.JetStream
	cfg      Config
	handler  Handler[T]
	logger   *slog.Logger
	observer Observer
	beats    *heartbeats
}

// New wires a consumer; it starts nothing. observer (nil for none) may be shared by every
// consumer of a process.
func New[T any](js jetstream.JetStream, cfg Config, h Handler[T], logger *slog.Logger, observer Observer) *Consumer[T] {
	cfg = cfg.withDefaults()
	return &Consumer[T]{
		js:       js,
		cfg:      cfg,
		handler:  h,
		logger:   logger.With("consumer", cfg.Name),
		observer: observer,
		beats:    newHeartbeats(),
	}
}

// observe tells the observer, if any, what became of a message handled since start.
func (c *Consumer[T]) observe(outcome string, start time.Time) {
	if c.observer != nil {
		c.observer.Observe(c.cfg.Name, outcome, 1, time.Since(start))
	}
}

// Run creates or updates the durable consumer and handles messages until ctx is done. It then
// stops pulling, and only then cancels the handlers in flight and waits for them: what they
// did not finish is handed back, and with this process's pulls gone the server redelivers it
// to another replica at once rather than to a pull that nobody reads. It returns nil.
func (c *Consumer[T]) Run(ctx context.Context) error {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, jetstream.ConsumerConfig{
		Durable:        c.cfg.Name,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.cfg.AckWait,
		MaxDeliver:     c.cfg.MaxDeliver + 1, // The adapter dead-letters on the last; this is a backstop.
		FilterSubjects: c.cfg.Subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxAckPending:  max(c.cfg.Concurrency*2, 64),
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // Stopped while starting: a clean stop, not a failure.
		}
		return fmt.Errorf("create consumer %s: %w", c.cfg.Name, err)
	}

	handlerCtx, stopHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHandlers()
	// The heartbeats outlive the pulls: they go on until the last handler has returned.
	beatsCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBeats()
	go c.beats.run(beatsCtx, c.cfg.AckWait/3)
	var wg sync.WaitGroup
	sem := make(chan struct{}, c.cfg.Concurrency)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			_ = msg.Nak()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.handle(handlerCtx, msg)
		}()
	}, jetstream.PullMaxMessages(c.cfg.Concurrency))
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.cfg.Name, err)
	}
	defer announce(c.observer, c.cfg.Name, cons)()
	c.logger.Info("consumer started", "stream", c.cfg.Stream, "subjects", c.cfg.Subjects, "concurrency", c.cfg.Concurrency)
	<-ctx.Done()
	cc.Stop()
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second): // Stop never blocks long; this only bounds a surprise.
	}
	stopHandlers()
	wg.Wait()
	return nil
}

// handle runs the handler on one message and acknowledges it.
func (c *Consumer[T]) handle(ctx context.Context, msg jetstream.Msg) {
	start := time.Now()
	delivery := uint64(1)
	if meta, err := msg.Metadata(); err == nil {
		delivery = meta.NumDelivered
	}

	env, err := events.Decode(msg.Data())
	var data T
	if err == nil {
		data, err = events.DataAs[T](env)
	}
	if err != nil {
		c.deadLetter(ctx, msg, env.ID, delivery, Permanent(err))
		c.observe(OutcomeDeadLettered, start)
		return
	}
	logger := c.logger.With("event_id", env.ID, "event_type", env.Type, "delivery", delivery)
	if env.RequestID != "" {
		logger = logger.With("request_id", env.RequestID)
	}
	// The handler's span, in the trace of the event's cause (its traceparent), through the
	// global OpenTelemetry provider: a no-op unless the process installed one.
	hctx, span := otel.Tracer(tracerName).Start(env.TraceContext(ctx), "process "+env.Type,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.consumer.group.name", c.cfg.Name),
			attribute.String("messaging.message.id", env.ID), attribute.Int64("messaging.delivery", int64(delivery)))) //nolint:gosec // Deliveries are far below 2^63.
	defer span.End()

	err = c.runHandler(hctx, msg, Event[T]{Envelope: env, Data: data, Delivery: delivery})
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	switch {
	case err == nil:
		if ackErr := msg.Ack(); ackErr != nil {
			logger.Warn("ack", "err", ackErr) // Redelivered; the handler's idempotency absorbs it.
		}
		c.observe(OutcomeAcked, start)
	case ctx.Err() != nil:
		// Shutting down: the failure may be the cancellation itself, so it is no verdict on
		// the event. Let another replica, or this one after restart, have it at once.
		_ = msg.NakWithDelay(0)
		c.observe(OutcomeRetried, start)
	case IsPermanent(err) || delivery >= uint64(c.cfg.MaxDeliver):
		logger.Error("giving up on event", "err", err, "permanent", IsPermanent(err))
		c.deadLetter(ctx, msg, env.ID, delivery, err)
		c.observe(OutcomeDeadLettered, start)
	default:
		delay := c.cfg.Backoff(delivery)
		logger.Warn("event handler failed; will retry", "err", err, "retry_in", delay)
		_ = msg.NakWithDelay(delay)
		c.observe(OutcomeRetried, start)
	}
}

// runHandler calls the handler with heartbeats running and a panic turned into an error.
func (c *Consumer[T]) runHandler(ctx context.Context, msg jetstream.Msg, e Event[T]) (err error) {
	defer c.beats.hold(msg)()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return c.handler(ctx, e)
}

// Dead-letter headers carry why and from where a message was given up on.
const (
	HeaderDLQSubject    = "Convergence-Dlq-Subject"
	HeaderDLQStreamSeq  = "Convergence-Dlq-Stream-Seq"
	HeaderDLQError      = "Convergence-Dlq-Error"
	HeaderDLQDeliveries = "Convergence-Dlq-Deliveries"
)

// deadLetter copies msg to the consumer's dead-letter subject, then terminates it. If the copy
// cannot be stored, the message is redelivered later instead of lost.
func (c *Consumer[T]) deadLetter(ctx context.Context, msg jetstream.Msg, eventID string, delivery uint64, cause error) {
	if err := DeadLetter(ctx, c.js, c.cfg.Name, c.logger, msg, eventID, delivery, cause); err != nil {
		c.logger.Error("dead-letter copy failed; message will be redelivered", "err", err)
		_ = msg.NakWithDelay(c.cfg.Backoff(delivery))
	}
}

// DeadLetter copies msg to the dead-letter subject of the consumer named consumer, with why
// (cause), where from and after how many deliveries in its headers, then terminates msg. The
// copy's Nats-Msg-Id is the consumer and the event ID (the stream sequence when the message
// was no event), so a repeated dead-lettering stores one copy. When the copy cannot be
// stored, DeadLetter returns the error and leaves msg alone: the caller naks it.
func DeadLetter(ctx context.Context, js jetstream.JetStream, consumer string, logger *slog.Logger, msg jetstream.Msg, eventID string, delivery uint64, cause error) error {
	dl := &nats.Msg{Subject: events.DeadLetterSubject(consumer), Data: msg.Data(), Header: nats.Header{}}
	dl.Header.Set(HeaderDLQSubject, msg.Subject())
	dl.Header.Set(HeaderDLQError, truncate(cause.Error(), 1024))
	dl.Header.Set(HeaderDLQDeliveries, strconv.FormatUint(delivery, 10))
	id := eventID
	if meta, err := msg.Metadata(); err == nil {
		seq := strconv.FormatUint(meta.Sequence.Stream, 10)
		dl.Header.Set(HeaderDLQStreamSeq, seq)
		if id == "" {
			id = "seq-" + seq
		}
	}
	dl.Header.Set(jetstream.MsgIDHeader, consumer+":"+id)
	pubCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(pubCtx, dl); err != nil {
		return fmt.Errorf("dead-letter copy: %w", err)
	}
	if err := msg.Term(); err != nil && !errors.Is(err, nats.ErrMsgAlreadyAckd) {
		// The copy is stored; a failed Term means one more delivery, dead-lettered again
		// under the same Nats-Msg-Id.
		logger.Warn("term", "event_id", eventID, "err", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
