package metering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/metering/ledger"
)

// batchConsumer pulls batches from a durable consumer, records each in one ledger
// transaction, and acknowledges its messages after the commit. See the package documentation
// for how failures are handled.
type batchConsumer[T any] struct {
	name     string // durable consumer; also names the dead-letter subject
	source   string // metrics label
	stream   string
	subjects []string
	cfg      Config
	js       jetstream.JetStream
	decode   func(events.Envelope) (T, error)
	record   func(context.Context, []T) (ledger.Result, error)
	// recorded is told what each committed batch did, for metrics and logs.
	recorded func(ledger.Result)
	logger   *slog.Logger
	metrics  *metrics
	hooks    *hooks
	backoff  func(uint64) time.Duration
}

// item is a decoded message.
type item[T any] struct {
	msg      jetstream.Msg
	eventID  string
	delivery uint64
	value    T
}

// held is a decoded batch on its way to the ledger. Its messages are kept from redelivery
// by heartbeats from the moment they are decoded until stop is called.
type held[T any] struct {
	items    []item[T]
	messages int // as pulled, dead-lettered ones included
	start    time.Time
	stop     func()
}

// run consumes until ctx is done, then returns nil. It is a pipeline of two stages: one
// goroutine pulls and decodes the next batch while this one records the last, so decoding
// costs no ledger time. Batches held when ctx ends are returned to JetStream at once (Nak
// without delay) for another replica.
func (b *batchConsumer[T]) run(ctx context.Context) error {
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.stream, b.consumerConfig())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		// A consumer that cannot be created at start is a configuration error.
		return fmt.Errorf("create consumer %s on %s: %w", b.name, b.stream, err)
	}
	b.logger.Info("consumer started", "stream", b.stream, "subjects", b.subjects, "batch_size", b.cfg.BatchSize)

	ready := make(chan *held[T], 1)
	pulled := make(chan struct{})
	go func() {
		defer close(pulled)
		defer close(ready)
		b.pull(ctx, cons, ready)
	}()
	for h := range ready {
		if ctx.Err() != nil {
			b.release(h.items)
		} else {
			b.recordHeld(ctx, h)
		}
		h.stop()
	}
	<-pulled
	return nil
}

func (b *batchConsumer[T]) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        b.name,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        b.cfg.AckWait,
		MaxDeliver:     b.cfg.MaxDeliver + 1, // record dead-letters at MaxDeliver; this is a backstop
		FilterSubjects: b.subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Up to three batches are held at once: one recorded, one ready, one being pulled.
		MaxAckPending: max(4*b.cfg.BatchSize, 1000),
	}
}

// pull fetches and decodes batches and hands them to ready until ctx is done. It recreates
// the durable consumer if it is deleted, and backs off while JetStream does not answer.
func (b *batchConsumer[T]) pull(ctx context.Context, cons jetstream.Consumer, ready chan<- *held[T]) {
	failures := uint64(0)
	for ctx.Err() == nil {
		if cons == nil {
			c, err := b.js.CreateOrUpdateConsumer(ctx, b.stream, b.consumerConfig())
			if err != nil {
				failures++
				b.logger.Warn("recreate consumer", "err", err)
				sleep(ctx, b.backoff(failures))
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
					b.release(h.items)
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
			delay := b.backoff(failures)
			b.logger.Warn("pull messages", "err", err, "retry_in", delay)
			sleep(ctx, delay)
		}
	}
}

// fetch returns what is pending, up to a batch. When nothing is, it waits up to IdleWait for
// one message, then takes whatever else is pending with it: a batch under load, no added
// latency when idle.
func (b *batchConsumer[T]) fetch(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
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
func (b *batchConsumer[T]) decodeAll(ctx context.Context, msgs []jetstream.Msg) *held[T] {
	h := &held[T]{messages: len(msgs), start: time.Now(), items: make([]item[T], 0, len(msgs))}
	for _, m := range msgs {
		it := item[T]{msg: m, delivery: 1}
		if meta, err := m.Metadata(); err == nil {
			it.delivery = meta.NumDelivered
		}
		env, err := events.Decode(m.Data())
		if err == nil {
			it.eventID = env.ID
			it.value, err = b.decode(env)
		}
		if err != nil {
			b.deadLetter(ctx, it, err)
			continue
		}
		h.items = append(h.items, it)
	}
	if len(h.items) == 0 {
		return nil
	}
	h.stop = b.heartbeat(h.items)
	return h
}

// recordHeld records a held batch and acknowledges it.
func (b *batchConsumer[T]) recordHeld(ctx context.Context, h *held[T]) {
	// A message delivered as often as allowed may be what keeps failing its batches: it is
	// recorded alone, and dead-lettered if it fails again.
	var fresh, lastChance []item[T]
	for _, it := range h.items {
		if it.delivery >= uint64(b.cfg.MaxDeliver) {
			lastChance = append(lastChance, it)
		} else {
			fresh = append(fresh, it)
		}
	}
	if len(fresh) > 0 {
		b.apply(ctx, fresh, false)
	}
	for _, it := range lastChance {
		b.apply(ctx, []item[T]{it}, true)
	}
	b.metrics.batchMessages.WithLabelValues(b.source).Observe(float64(h.messages))
	b.metrics.batchDuration.WithLabelValues(b.source).Observe(time.Since(h.start).Seconds())
}

// apply records items in one transaction and acknowledges them. A failure caused by an event
// (a permanent error) is narrowed down by recording the items one by one, and the failing one
// is dead-lettered. Any other failure holds the items and retries until it passes or ctx ends;
// on the last chance it dead-letters instead.
func (b *batchConsumer[T]) apply(ctx context.Context, items []item[T], lastChance bool) {
	values := make([]T, len(items))
	for i, it := range items {
		values[i] = it.value
	}
	for attempt := uint64(1); ; attempt++ {
		res, err := b.recordSafely(ctx, values)
		if err == nil {
			b.commit(items, res)
			return
		}
		switch {
		case ctx.Err() != nil:
			b.release(items)
			return
		case len(items) > 1 && permanent(err):
			b.logger.Warn("an event of the batch was refused; recording them one by one", "err", err, "batch", len(items))
			for _, it := range items {
				b.apply(ctx, []item[T]{it}, lastChance)
			}
			return
		case permanent(err) || lastChance:
			b.deadLetter(ctx, items[0], err)
			return
		}
		delay := b.backoff(attempt)
		b.metrics.writeRetries.WithLabelValues(b.source).Inc()
		b.logger.Warn("ledger write failed; holding the batch and retrying", "err", err, "batch", len(items), "attempt", attempt, "retry_in", delay)
		if !sleep(ctx, delay) {
			b.release(items)
			return
		}
	}
}

// recordSafely records values, turning a panic into a permanent error.
func (b *batchConsumer[T]) recordSafely(ctx context.Context, values []T) (res ledger.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = consumer.Permanent(fmt.Errorf("ledger panic: %v", r))
		}
	}()
	return b.record(ctx, values)
}

// commit acknowledges items whose effect is committed. A lost ack is harmless: the redelivery
// finds the event's key and changes nothing.
func (b *batchConsumer[T]) commit(items []item[T], res ledger.Result) {
	b.metrics.events.WithLabelValues(b.source, outcomeRecorded).Add(float64(res.Recorded))
	b.metrics.events.WithLabelValues(b.source, outcomeDuplicate).Add(float64(res.Duplicates))
	b.metrics.events.WithLabelValues(b.source, outcomeConflict).Add(float64(len(res.Conflicts)))
	b.metrics.lines.WithLabelValues(b.source).Add(float64(res.Lines))
	for _, c := range res.Conflicts {
		b.logger.Warn("task already counted under another event; not counted again", "event_id", c.EventID, "task_id", c.TaskID)
	}
	if b.recorded != nil {
		b.recorded(res)
	}
	if b.hooks.afterCommit != nil {
		ids, deliveries := make([]string, len(items)), make([]uint64, len(items))
		for i, it := range items {
			ids[i], deliveries[i] = it.eventID, it.delivery
		}
		if !b.hooks.afterCommit(b.source, ids, deliveries) {
			return
		}
	}
	for _, it := range items {
		if err := it.msg.Ack(); err != nil {
			b.logger.Debug("ack", "event_id", it.eventID, "err", err)
		}
	}
}

// release gives items back to JetStream for immediate redelivery, on shutdown.
func (b *batchConsumer[T]) release(items []item[T]) {
	for _, it := range items {
		_ = it.msg.NakWithDelay(0)
	}
	b.metrics.events.WithLabelValues(b.source, outcomeRetried).Add(float64(len(items)))
}

// heartbeat keeps items from being redelivered while they are held, however long the ledger
// takes, until the returned stop is called.
func (b *batchConsumer[T]) heartbeat(items []item[T]) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(b.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, it := range items {
					_ = it.msg.InProgress()
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// deadLetter copies the message to the consumer's dead-letter subject with why, then
// terminates it. If the copy cannot be stored, the message is redelivered later instead.
func (b *batchConsumer[T]) deadLetter(ctx context.Context, it item[T], cause error) {
	b.logger.Error("giving up on event", "event_id", it.eventID, "delivery", it.delivery, "err", cause)
	if err := consumer.DeadLetter(ctx, b.js, b.name, b.logger, it.msg, it.eventID, it.delivery, cause); err != nil {
		b.logger.Error("dead-letter copy failed; the event will be redelivered", "event_id", it.eventID, "err", err)
		_ = it.msg.NakWithDelay(b.backoff(it.delivery))
		b.metrics.events.WithLabelValues(b.source, outcomeRetried).Inc()
		return
	}
	b.metrics.events.WithLabelValues(b.source, outcomeDeadLettered).Inc()
}

// permanent reports whether err is the events' fault, so retrying cannot help: marked
// Permanent, or a PostgreSQL data exception (class 22) or integrity violation (class 23).
// Anything else (the database down, a deadlock, a missing migration) is retried.
func permanent(err error) bool {
	if consumer.IsPermanent(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "22", "23":
			return true
		}
	}
	return false
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
