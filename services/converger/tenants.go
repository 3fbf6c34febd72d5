package converger

import (
	"context"
	"fmt"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
)

// destroyedTenants consumes the facts that tenants were destroyed.
func (s *Service) destroyedTenants() *consumer.Consumer[events.TenantLifecycle] {
	return consumer.New(s.deps.JS, consumer.Config{
		Name:        events.ConsumerConvergerTenants,
		Stream:      events.StreamTenantLifecycle,
		Subjects:    []string{events.LifecycleFilter(events.StateDestroyed, 0)},
		Concurrency: 4,
		MaxDeliver:  s.cfg.MaxDeliver,
		AckWait:     s.cfg.AckWait,
	}, s.tenantDestroyed, s.logger, nil)
}

// tenantDestroyed cancels the unfinished tasks of a destroyed tenant, and records the tenant
// so that a converge request of its that is still on its way is cancelled when it arrives
// instead of run: nothing runs, and nothing is billed, for a tenant that is gone.
func (s *Service) tenantDestroyed(ctx context.Context, ev consumer.Event[events.TenantLifecycle]) error {
	envID := ev.Data.EnvID
	ids, err := s.store.TenantDestroyed(ctx, envID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := s.cancel(ctx, events.ConvergeRequest{TaskID: id, EnvID: envID}, ev.Envelope.RequestID); err != nil {
			return fmt.Errorf("cancel task %s of destroyed tenant %d: %w", id, envID, err)
		}
	}
	if len(ids) > 0 {
		s.logger.Info("tenant destroyed; its unfinished tasks are cancelled", "env_id", envID, "tasks", len(ids))
	}
	return nil
}
