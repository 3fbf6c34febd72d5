package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Handler handles one decoded event. Returning nil acknowledges the message; an error asks for
// redelivery after a short delay.
type Handler[T any] func(ctx context.Context, e Envelope, data T) error

// Consume reads events of type T from stream through the durable consumer cfg (created or
// updated to cfg) and calls fn for each, one at a time and in stream order. It blocks until ctx
// is done, then stops cleanly and returns nil. A message that is not a valid envelope or whose
// data does not decode as T is terminated, not redelivered.
//
// It is the integrator's way in: a durable consumer remembers its position across restarts,
// and because facts streams keep history, a consumer created late still sees every event.
func Consume[T any](ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, fn Handler[T]) error {
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume %s: %w", cfg.Durable, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("next message for %s: %w", cfg.Durable, err)
		}
		env, err := Decode(msg.Data())
		if err != nil {
			_ = msg.Term()
			continue
		}
		data, err := DataAs[T](env)
		if err != nil {
			_ = msg.Term()
			continue
		}
		if err := fn(ctx, env, data); err != nil {
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		_ = msg.Ack()
	}
}

// ConsumeLifecycle follows tenant lifecycle facts through the durable consumer named durable,
// from the first fact kept. filter narrows the facts, as LifecycleFilter builds it; empty means
// every tenant and state. See Consume for the contract.
func ConsumeLifecycle(ctx context.Context, js jetstream.JetStream, durable, filter string, fn Handler[TenantLifecycle]) error {
	if filter == "" {
		filter = SubjectTenantLifecycle
	}
	return Consume(ctx, js, StreamTenantLifecycle, Consumer(durable, filter), fn)
}
