package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
)

// handle dispatches one command of the TENANT_COMMANDS stream by its type. A command for a
// tenant that does not exist, or of an unknown type, is dead-lettered; an error the engine
// or database may recover from is retried with backoff.
func (s *Service) handle(ctx context.Context, e consumer.Event[json.RawMessage]) error {
	requestID := e.Envelope.RequestID
	switch e.Envelope.Type {
	case events.TypeTenantSpawn:
		var cmd events.TenantSpawn
		if err := json.Unmarshal(e.Data, &cmd); err != nil || cmd.EnvID <= 0 {
			return consumer.Permanent(fmt.Errorf("spawn command without a valid envId: %s", e.Data))
		}
		return s.permanentIfMissing(s.spawn(ctx, cmd, requestID))
	case events.TypeTenantDestroy:
		var cmd events.TenantDestroy
		if err := json.Unmarshal(e.Data, &cmd); err != nil || cmd.EnvID <= 0 {
			return consumer.Permanent(fmt.Errorf("destroy command without a valid envId: %s", e.Data))
		}
		return s.permanentIfMissing(s.destroyCommand(ctx, cmd, requestID))
	default:
		return consumer.Permanent(fmt.Errorf("unknown command type %q", e.Envelope.Type))
	}
}

func (s *Service) permanentIfMissing(err error) error {
	if errors.Is(err, errTenantNotFound) {
		return consumer.Permanent(err)
	}
	return err
}

// spawn handles tenant.spawn: it runs the tenant unless the command is stale or already done.
func (s *Service) spawn(parent context.Context, cmd events.TenantSpawn, requestID string) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	unlock, err := s.locks.lock(ctx, cmd.EnvID, cancel)
	if err != nil {
		return err
	}
	defer unlock()

	t, err := s.loadTenant(ctx, cmd.EnvID)
	if err != nil {
		return err
	}
	switch {
	case t.Desired != desiredRunning || t.Status == events.StateDestroyed:
		return nil // A destroy came first; it removes whatever there is.
	case cmd.Generation < t.Generation:
		s.log.Info("stale spawn command ignored", "envId", t.ID, "generation", cmd.Generation, "current", t.Generation)
		return nil
	case t.Status != events.StateProvisioning:
		return nil // Done by an earlier delivery, or the reconciler.
	}
	if requestID == "" {
		requestID = t.RequestID
	}
	err = s.provision(ctx, t, requestID)
	if err != nil && ctx.Err() != nil && parent.Err() == nil {
		// A destroy interrupted the spawn; it removes whatever the spawn had made.
		return nil
	}
	return err
}

// destroyCommand handles tenant.destroy. A spawn of the same tenant still in progress is
// interrupted rather than waited for.
func (s *Service) destroyCommand(ctx context.Context, cmd events.TenantDestroy, requestID string) error {
	s.locks.interrupt(cmd.EnvID)
	unlock, err := s.locks.lock(ctx, cmd.EnvID, nil)
	if err != nil {
		return err
	}
	defer unlock()
	t, err := s.loadTenant(ctx, cmd.EnvID)
	if err != nil {
		return err
	}
	if t.Desired != desiredDestroyed {
		// Recorded first, so a spawn or the reconciler that looks at the tenant next leaves it
		// to this destroy.
		if _, err := s.deps.Pool.Exec(ctx, `
			UPDATE environments SET desired_status = 'destroyed', updated_at = now() WHERE id = $1`, t.ID); err != nil {
			return fmt.Errorf("mark tenant %d for destruction: %w", t.ID, err)
		}
		t.Desired = desiredDestroyed
	}
	return s.destroy(ctx, t, requestID)
}
