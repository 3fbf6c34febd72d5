package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergence-dev/convergence/pkg/events"
)

// BatchHandler handles a batch of events as one effect (one database transaction, say). Nil
// acknowledges every event of it. An error holds the batch, kept from redelivery by
// heartbeats, and runs it again with backoff until it passes, since it says the effect could
// not be made now (the database is down), not that an event is wrong. A Permanent error says
// an event is wrong: the batch is handled again an event at a time, and the event that fails
// on its own is dead-lettered. ErrLeaveForRedelivery leaves the batch's messages unacknowledged.
type BatchHandler[T any] func(ctx context.Context, batch []Event[T]) error

// ErrLeaveForRedelivery, returned by a BatchHandler, leaves the batch's messages neither
// acknowledged nor handed back: JetStream delivers them again once their ack wait has passed,
// as it does those of a process that died. Tests of redelivery use it.
var ErrLeaveForRedelivery = errors.New("leave the batch for redelivery")

// BatchConfig describes a batch consumer: a Config (whose Concurrency it does not use) and
// the batches it pulls.
type BatchConfig struct {
	Config
	// BatchSize is the most messages handled in one batch. Default 500.
	BatchSize int
	// IdleWait is how long a pull waits for a message when none is pending. It adds no latency:
	// a message that arrives ends the wait. Default 5s.
	IdleWait time.Duration
	// Decode turns an event into what the handler takes; an error dead-letters the event.
	// Default: its data decoded as T.
	Decode func(events.Envelope) (any, error)
}

// Outcomes a batch consumer also reports: OutcomeHeld when a batch's handling failed and it
// is held for another try; OutcomeBatch once for each batch, with how long it took.
const (
	OutcomeHeld  = "held"
	OutcomeBatch = "batch"
)

// Batch runs a BatchHandler on a durable JetStream consumer. Decoding, dead letters,
// heartbeats and acknowledgements are as Consumer's.
type Batch[T any] struct {
	js       jetstream.JetStream
	cfg      BatchConfig
	handler  BatchHandler[T]
	logger   *slog.Logger
	observer Observer
	beats    *heartbeats
}

// NewBatch wires a batch consumer; it starts nothing. observer (nil for none) is told the
// outcome of each message, OutcomeHeld for each retry of a held batch, and OutcomeBatch for
// each batch.
func NewBatch[T any](js jetstream.JetStream, cfg BatchConfig, h BatchHandler[T], logger *slog.Logger, observer Observer) *Batch[T] {
	cfg.Config = cfg.withDefaults()
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.IdleWait <= 0 {
		cfg.IdleWait = 5 * time.Second
	}
	return &Batch[T]{js: js, cfg: cfg, handler: h, logger: logger.With("consumer", cfg.Name), observer: observer, beats: newHeartbeats()}
}

// held is a decoded batch on its way to the handler. Its messages are kept from redelivery
// by heartbeats from the moment they are decoded until stop is called.
type held[T any] struct {
	events   []Event[T]
	msgs     []jetstream.Msg // events[i] came in msgs[i]
	messages int             // as pulled, dead-lettered ones included
	start    time.Time
	stop     func()
}

// Run creates or updates the durable consumer and handles batches until ctx is done, then
// returns nil. It is a pipeline of two stages: one goroutine pulls and decodes the next batch
// while this one handles the last, so decoding costs the handler no time. Batches held when
// ctx ends are handed back to JetStream at once for another replica.
func (b *Batch[T]) Run(ctx context.Context) error {
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.cfg.Stream, b.consumerConfig())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("create consumer %s on %s: %w", b.cfg.Name, b.cfg.Stream, err)
	}
	defer announce(b.observer, b.cfg.Name, cons)()
	b.logger.Info("consumer started", "stream", b.cfg.Stream, "subjects", b.cfg.Subjects, "batch_size", b.cfg.BatchSize)

	// The heartbeats outlive the pulls: they go on until the last batch is handled or released.
	beatsCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBeats()
	go b.beats.run(beatsCtx, b.cfg.AckWait/3)
	ready := make(chan *held[T], 1)
	pulled := make(chan struct{})
	go func() {
		defer close(pulled)
		defer close(ready)
		b.pull(ctx, cons, ready)
	}()
	for h := range ready {
		if ctx.Err() != nil {
			b.release(h.msgs)
		} else {
			b.handle(ctx, h)
		}
		h.stop()
	}
	<-pulled
	return nil
}

func (b *Batch[T]) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        b.cfg.Name,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        b.cfg.AckWait,
		MaxDeliver:     b.cfg.MaxDeliver + 1, // The adapter dead-letters on the last; this is a backstop.
		FilterSubjects: b.cfg.Subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Up to three batches are held at once: one handled, one ready, one being pulled.
		MaxAckPending: max(4*b.cfg.BatchSize, 1000),
	}
}

// pull fetches and decodes batches and hands them to ready until ctx is done. It recreates
// the durable consumer if it is deleted, and backs off while JetStream does not answer.
func (b *Batch[T]) pull(ctx context.Context, cons jetstream.Consumer, ready chan<- *held[T]) {
	failures := uint64(0)
	for ctx.Err() == nil {
		if cons == nil {
			c, err := b.js.CreateOrUpdateConsumer(ctx, b.cfg.Stream, b.consumerConfig())
			if err != nil {
				failures++
				b.logger.Warn("recreate consumer", "err", err)
				sleep(ctx, b.cfg.Backoff(failures))
				continue
			}
			cons = c
		}
		msgs, err := b.fetch(ctx, cons)
		if len(msgs) > 0 {
			if h := b.decodeAll(ctx, msgs); h != nil {
				select {
				case ready <- h:
				case <-ctx.Done():
					b.release(h.msgs)
					h.stop()
				}
			}
		}
		switch {
		case err == nil:
			failures = 0
		case ctx.Err() != nil:
		case errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted):
			failures++
			b.logger.Warn("consumer is gone; recreating it", "err", err)
			cons = nil
		default:
			failures++
			delay := b.cfg.Backoff(failures)
			b.logger.Warn("pull messages", "err", err, "retry_in", delay)
			sleep(ctx, delay)
		}
	}
}

// fetch returns what is pending, up to a batch. When nothing is, it waits up to IdleWait for
// one message, then takes whatever else is pending with it: a batch under load, no added
// latency when idle.
func (b *Batch[T]) fetch(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	msgs, err := drain(cons.FetchNoWait(b.cfg.BatchSize))
	if err != nil || len(msgs) > 0 {
		return msgs, err
	}
	wctx, cancel := context.WithTimeout(ctx, b.cfg.IdleWait)
	defer cancel()
	msgs, err = drain(cons.Fetch(1, jetstream.FetchContext(wctx)))
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = nil
	}
	if err != nil || len(msgs) == 0 || b.cfg.BatchSize == 1 {
		return msgs, err
	}
	more, err := drain(cons.FetchNoWait(b.cfg.BatchSize - 1))
	return append(msgs, more...), err
}

// drain collects a fetched batch. Messages received before an error are returned with it.
func drain(batch jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, batch.Error()
}

// decodeAll decodes msgs, dead-letters those that are not valid events, and returns the rest
// held, with heartbeats running; nil when none is left.
func (b *Batch[T]) decodeAll(ctx context.Context, msgs []jetstream.Msg) *held[T] {
	h := &held[T]{messages: len(msgs), start: time.Now()}
	for _, m := range msgs {
		e := Event[T]{Delivery: 1}
		if meta, err := m.Metadata(); err == nil {
			e.Delivery = meta.NumDelivered
		}
		env, err := events.Decode(m.Data())
		if err == nil {
			e.Envelope = env
			e.Data, err = b.decode(env)
		}
		if err != nil {
			b.deadLetter(ctx, m, e, err)
			continue
		}
		h.events = append(h.events, e)
		h.msgs = append(h.msgs, m)
	}
	if len(h.events) == 0 {
		return nil
	}
	h.stop = b.beats.hold(h.msgs...)
	return h
}

func (b *Batch[T]) decode(env events.Envelope) (T, error) {
	if b.cfg.Decode == nil {
		return events.DataAs[T](env)
	}
	v, err := b.cfg.Decode(env)
	if err != nil {
		var zero T
		return zero, err
	}
	t, ok := v.(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("decode of %s gave a %T", env.Type, v)
	}
	return t, nil
}

// handle runs the handler on a held batch and acknowledges it. A message delivered as often as
// allowed may be what keeps failing its batches: it is handled alone, and dead-lettered if it
// fails again.
func (b *Batch[T]) handle(ctx context.Context, h *held[T]) {
	var fresh, lastChance []int
	for i, e := range h.events {
		if e.Delivery >= uint64(b.cfg.MaxDeliver) {
			lastChance = append(lastChance, i)
		} else {
			fresh = append(fresh, i)
		}
	}
	if len(fresh) > 0 {
		b.apply(ctx, h, fresh, false)
	}
	for _, i := range lastChance {
		b.apply(ctx, h, []int{i}, true)
	}
	b.observe(OutcomeBatch, h.messages, time.Since(h.start))
}

// apply runs the handler on the events of h at idx and acknowledges them; see BatchHandler
// for what its errors mean. On the last chance a failure dead-letters instead of retrying.
func (b *Batch[T]) apply(ctx context.Context, h *held[T], idx []int, lastChance bool) {
	batch := make([]Event[T], len(idx))
	msgs := make([]jetstream.Msg, len(idx))
	for i, j := range idx {
		batch[i], msgs[i] = h.events[j], h.msgs[j]
	}
	for attempt := uint64(1); ; attempt++ {
		start := time.Now()
		err := b.run(ctx, batch)
		switch {
		case err == nil:
			for i, m := range msgs {
				if err := m.Ack(); err != nil {
					b.logger.Debug("ack", "event_id", batch[i].Envelope.ID, "err", err) // The redelivery changes nothing.
				}
			}
			b.observe(OutcomeAcked, len(msgs), time.Since(start))
			return
		case errors.Is(err, ErrLeaveForRedelivery):
			return
		case ctx.Err() != nil:
			b.release(msgs)
			return
		case len(idx) > 1 && IsPermanent(err):
			b.logger.Warn("an event of the batch was refused; handling them one by one", "err", err, "batch", len(idx))
			for _, j := range idx {
				b.apply(ctx, h, []int{j}, lastChance)
			}
			return
		case IsPermanent(err) || lastChance:
			b.deadLetter(ctx, msgs[0], batch[0], err)
			return
		}
		delay := b.cfg.Backoff(attempt)
		b.observe(OutcomeHeld, len(msgs), 0)
		b.logger.Warn("batch failed; holding it and retrying", "err", err, "batch", len(idx), "attempt", attempt, "retry_in", delay)
		if !sleep(ctx, delay) {
			b.release(msgs)
			return
		}
	}
}

// run calls the handler, turning a panic into a permanent error.
func (b *Batch[T]) run(ctx context.Context, batch []Event[T]) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Permanent(fmt.Errorf("handler panic: %v", r))
		}
	}()
	return b.handler(ctx, batch)
}

// release hands msgs back to JetStream for immediate redelivery, on shutdown.
func (b *Batch[T]) release(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.NakWithDelay(0)
	}
	b.observe(OutcomeRetried, len(msgs), 0)
}

// deadLetter copies m to the consumer's dead-letter subject with why, then terminates it. If
// the copy cannot be stored, the message is redelivered later instead.
func (b *Batch[T]) deadLetter(ctx context.Context, m jetstream.Msg, e Event[T], cause error) {
	b.logger.Error("giving up on event", "event_id", e.Envelope.ID, "delivery", e.Delivery, "err", cause)
	if err := DeadLetter(ctx, b.js, b.cfg.Name, b.logger, m, e.Envelope.ID, e.Delivery, cause); err != nil {
		b.logger.Error("dead-letter copy failed; the event will be redelivered", "event_id", e.Envelope.ID, "err", err)
		_ = m.NakWithDelay(b.cfg.Backoff(e.Delivery))
		b.observe(OutcomeRetried, 1, 0)
		return
	}
	b.observe(OutcomeDeadLettered, 1, 0)
}

// observe tells the observer, if any, that n messages had outcome, handled in took.
func (b *Batch[T]) observe(outcome string, n int, took time.Duration) {
	if b.observer != nil {
		b.observer.Observe(b.cfg.Name, outcome, n, took)
	}
}

// sleep waits d or until ctx is done, and reports whether it waited the whole d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
