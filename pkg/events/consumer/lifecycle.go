package consumer

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Lifecycle follows tenant lifecycle facts through the durable consumer named durable, from the
// first fact kept, one at a time and in order, until ctx is done; see Consumer for how h's
// result is acknowledged. filter narrows the facts, as events.LifecycleFilter builds it; empty
// means every tenant and state.
//
// It is the integrator's way in: a durable consumer remembers its position across restarts,
// and because the lifecycle stream keeps history, one created late still sees every fact.
func Lifecycle(ctx context.Context, js jetstream.JetStream, durable, filter string, h Handler[events.TenantLifecycle], logger *slog.Logger) error {
	if filter == "" {
		filter = events.SubjectTenantLifecycle
	}
	cfg := Config{Name: durable, Stream: events.StreamTenantLifecycle, Subjects: []string{filter}}
	return New(js, cfg, h, logger, nil).Run(ctx)
}
